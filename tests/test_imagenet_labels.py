"""--labels=imagenet: Keras' ImageNet class names, from Keras' own cache.

No network and no ImageNet weights: each test puts a fake
imagenet_class_index.json in a temporary Keras cache, points hubexport at it
(labels._keras_home) and makes the fake's md5 the expected hash; a download
attempt fails the test (urlretrieve raises).
"""

import hashlib
import inspect
import json
import os
import subprocess
import sys
import urllib.error

import pytest

from hubexport import config as config_lib
from hubexport import labels as labels_lib
from hubexport.errors import UserError
from hubexport.export import planning

NAMES = tuple("Indian_elephant" if i == 385 else "crane" if i in (134, 517) else f"class_{i}"
              for i in range(1000))


def _index_json(names=NAMES):
    return json.dumps({str(i): [f"n{i:08d}", name] for i, name in enumerate(names)})


@pytest.fixture
def no_download(monkeypatch):
    """Keras' get_file fails as it does offline, and says whether it tried."""
    from keras.src.utils import file_utils

    tried = []

    def offline(url, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    return tried


@pytest.fixture
def keras_home(tmp_path, monkeypatch, no_download):
    """An empty Keras cache directory that hubexport and get_file use."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr(labels_lib, "_keras_home", lambda: str(home))
    return home


@pytest.fixture
def cached_index(keras_home, monkeypatch):
    """The fake class index in the cache, as decode_predictions would have left it."""
    text = _index_json()
    (keras_home / "models").mkdir()
    path = keras_home / "models" / "imagenet_class_index.json"
    path.write_text(text)
    monkeypatch.setattr(labels_lib, "IMAGENET_INDEX_HASH", hashlib.md5(text.encode()).hexdigest())
    return path


def test_url_cache_name_and_hash_are_those_of_decode_predictions():
    from keras.src.applications import imagenet_utils

    source = inspect.getsource(imagenet_utils.decode_predictions)
    assert imagenet_utils.CLASS_INDEX_PATH == labels_lib.IMAGENET_INDEX_URL
    assert f'"{labels_lib.IMAGENET_INDEX_FILE}"' in source
    assert f'cache_subdir="{labels_lib.IMAGENET_INDEX_SUBDIR}"' in source
    assert f'file_hash="{labels_lib.IMAGENET_INDEX_HASH}"' in source


def test_class_i_is_named_by_entry_i_of_the_cached_file(cached_index, no_download):
    names = labels_lib.imagenet()
    assert names == NAMES and names[385] == "Indian_elephant"
    assert not no_download


def test_keras_get_file_finds_the_same_cached_file(cached_index, no_download):
    assert labels_lib._fetch_imagenet_index() == str(cached_index)
    assert not no_download


def test_a_missing_file_is_fetched_with_get_file_as_decode_predictions_does(
        keras_home, monkeypatch):
    import keras

    calls = []

    def get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        path = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"], fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(_index_json())
        return path

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    assert labels_lib.imagenet() == NAMES
    assert calls == [("imagenet_class_index.json", labels_lib.IMAGENET_INDEX_URL,
                      dict(cache_subdir="models", file_hash=labels_lib.IMAGENET_INDEX_HASH,
                           cache_dir=str(keras_home)))]


def test_offline_is_one_line_naming_the_file_url_and_where_to_put_it(keras_home, no_download):
    with pytest.raises(UserError) as raised:
        labels_lib.imagenet()
    message = str(raised.value)
    assert no_download == [labels_lib.IMAGENET_INDEX_URL]  # Keras' own get_file tried.
    assert "\n" not in message
    assert labels_lib.IMAGENET_INDEX_URL in message
    assert f"put it at {keras_home}/models/imagenet_class_index.json" in message
    assert "Temporary failure in name resolution" in message
    assert "--labels=FILE" in message


def test_a_corrupt_cached_file_says_to_delete_it(cached_index, monkeypatch):
    text = _index_json(NAMES[:999])
    cached_index.write_text(text)
    monkeypatch.setattr(labels_lib, "IMAGENET_INDEX_HASH", hashlib.md5(text.encode()).hexdigest())
    with pytest.raises(UserError, match=f"{cached_index} is not Keras' ImageNet class index.*"
                                        "delete it"):
        labels_lib.imagenet()


@pytest.mark.notf
def test_the_cache_honours_keras_home_before_and_after_keras_is_imported(tmp_path):
    code = ("from hubexport import labels\n"
            "print(labels._models_dir())\n"
            "import keras\n"
            "print(labels._models_dir())\n")
    env = {**os.environ, "KERAS_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.stdout.split() == [str(tmp_path / "models")] * 2, result.stderr


def test_plan_takes_imagenet_names_for_an_imagenet_classifier(cached_index):
    plan = planning.plan("MobileNetV2", "classification", labels="imagenet", top_k=3)
    assert plan.labels == NAMES and plan.labels_source == "imagenet" and plan.top_k == 3
    assert planning.plan("MobileNetV2", "classification", weights="ImageNet",
                         labels="ImageNet").labels_source == "imagenet"
    with pytest.raises(UserError, match="--top_k=1001 is more than the 1000 classes"):
        planning.plan("MobileNetV2", "classification", labels="imagenet", top_k=1001)


def test_imagenet_labels_are_part_of_the_request_key(cached_index, tmp_path):
    (tmp_path / "same.txt").write_text("".join(f"{n}\n" for n in NAMES))
    from_file = planning.plan("MobileNetV2", "classification", labels=str(tmp_path / "same.txt"))
    imagenet = planning.plan("MobileNetV2", "classification", labels="imagenet")
    assert from_file.labels == imagenet.labels and from_file.labels_source is None
    assert planning.request_key(from_file) != planning.request_key(imagenet)


@pytest.mark.notf
def test_request_keys_of_exports_without_imagenet_labels_are_unchanged(monkeypatch):
    """labels_source is left out of the key when None, so export_all does not
    redo the exports made before the field."""
    hashed = []
    monkeypatch.setattr(planning, "json", type("Json", (), {"dumps": staticmethod(
        lambda value, **kwargs: hashed.append(value) or json.dumps(value, **kwargs))}))
    planning.request_key(planning.plan("MobileNetV2", "feature_vector", 64, "none"))
    assert "labels_source" not in hashed[0]["plan"] and "labels" in hashed[0]["plan"]


@pytest.mark.notf
@pytest.mark.parametrize("request_, reason", [
    (dict(architecture="MobileNetV2", task="feature_vector"),
     "--labels applies only to --task=classification"),
    (dict(architecture="MobileNetV2", task="classification", weights="none"),
     "needs --weights=imagenet; with --weights=none the classes are random or your own: "
     "pass --labels=FILE"),
    # Even a weights file of the 1000-class classifier: its classes are not ImageNet's
    # (refused before the file is read: this one does not exist).
    (dict(architecture="MobileNetV2", task="classification", weights="mine.weights.h5"),
     "needs --weights=imagenet; with --weights=mine.weights.h5"),
    (dict(keras_model="mine.keras", task="classification"),
     "your --keras_model has its own classes: pass --labels=FILE"),
])
def test_imagenet_labels_are_refused_without_the_imagenet_classifier(request_, reason,
                                                                    monkeypatch):
    monkeypatch.setattr(labels_lib, "imagenet", lambda: pytest.fail("fetched the class index"))
    with pytest.raises(UserError) as raised:
        planning.plan(**request_, labels="imagenet")
    assert reason in str(raised.value) and "\n" not in str(raised.value)


def test_the_keyword_wins_over_a_file_named_imagenet(cached_index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").write_text("".join(f"mine_{i}\n" for i in range(1000)))
    assert planning.plan("VGG16", "classification", labels="imagenet").labels == NAMES
    from_file = planning.plan("VGG16", "classification", labels="./imagenet")
    assert from_file.labels[0] == "mine_0" and from_file.labels_source is None


def test_a_config_takes_the_keyword_and_a_file_beside_it(cached_index, tmp_path):
    keyword = tmp_path / "keyword.toml"
    keyword.write_text('architecture = "ResNet50"\ntask = "classification"\nlabels = "imagenet"\n')
    settings = config_lib.load(str(keyword))
    assert settings["labels"] == "imagenet"
    assert planning.plan(**settings).labels == NAMES
    beside = tmp_path / "beside.toml"
    beside.write_text('architecture = "ResNet50"\ntask = "classification"\nlabels = "./imagenet"\n')
    assert config_lib.load(str(beside))["labels"] == os.path.join(str(tmp_path), "./imagenet")


@pytest.mark.notf
def test_cli_refuses_imagenet_labels_with_random_weights_in_one_line(capsys, tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    from hubexport import cli

    with flagsaver.flagsaver():
        code = cli.main(flags.FLAGS([
            "hubexport", "export", "--architecture=MobileNetV2", "--task=classification",
            "--weights=none", "--labels=imagenet", f"--output={tmp_path / 'out'}"]))
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("hubexport: error: --labels=imagenet names")
    assert "\n" not in err
    assert not (tmp_path / "out").exists()


def _weights_ranking(keras, path, first):
    """A random MobileNetV2 classifier at 32x32 whose logits rank the classes by
    their bias (class `first` highest; random features are ~1e-11, so they tie)."""
    import numpy as np

    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                           classifier_activation=None)
    kernel, bias = model.get_layer("predictions").get_weights()
    bias = np.linspace(0.0, 1.0, 1000, dtype="float32")
    bias[first] = 2.0
    model.get_layer("predictions").set_weights([kernel, bias])
    model.save_weights(path)
    return path


@pytest.mark.slow
def test_an_export_with_imagenet_labels_names_top_k_and_says_where_they_come_from(
        cached_index, keras, tmp_path, monkeypatch, capsys):
    """The one export: through the CLI, with a weights file standing in for
    ImageNet's (the weights condition is lifted for it)."""
    import numpy as np
    import tensorflow as tf
    from absl import flags
    from absl.testing import flagsaver

    from hubexport import cli, export

    weights = _weights_ranking(keras, str(tmp_path / "ranked.weights.h5"), first=385)
    monkeypatch.setattr(planning, "_imagenet_labels_problem", lambda *args: None)
    output = tmp_path / "mobilenet_v2_imagenet_labels"
    with flagsaver.flagsaver():
        code = cli.main(flags.FLAGS([
            "hubexport", "export", "--architecture=MobileNetV2", "--task=classification",
            "--image_size=32", f"--weights={weights}", "--labels=imagenet",
            "--top_k=3", f"--output={output}"]))
    assert code == 0, capsys.readouterr().err
    assert (output / "assets" / "labels.txt").read_text().splitlines() == list(NAMES)
    info = export.read_provenance(str(output))
    assert info["labels"] == {"count": 1000, "file": "assets/labels.txt"}
    assert "1000 ImageNet classes" in info["output"]["meaning"]
    assert "imagenet_class_index.json" in info["output"]["meaning"]
    card = (output / "assets.extra" / "model_card.md").read_text()
    assert "named in assets/labels.txt from Keras' imagenet_class_index.json" in card

    images = tf.random.stateless_uniform([2, 32, 32, 3], seed=[1, 2])
    loaded = tf.saved_model.load(str(output))
    top = loaded.signatures["top_k"](images=images)
    logits = loaded(images, training=False).numpy()
    expected = [[NAMES[i] for i in np.argsort(-row)[:3]] for row in logits]
    assert expected[0] == ["Indian_elephant", "class_999", "class_998"]
    assert [[n.decode() for n in row] for row in top["labels"].numpy()] == expected


def test_the_keyword_reads_the_cached_index_and_a_path_itself(keras_home, tmp_path):
    """What export_all and export --config protect as an input of the export (an
    output that holds the Keras cache is refused): the cache file, not ./imagenet."""
    assert labels_lib.source_file("imagenet") == str(
        keras_home / "models" / "imagenet_class_index.json")
    assert labels_lib.source_file("./imagenet") == "./imagenet"
    assert labels_lib.source_file(None) is None
