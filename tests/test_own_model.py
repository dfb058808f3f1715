"""Own Keras models, labels and top_k, raw-image serving: as a new user tries them.

The user of the issue: a VGG16 backbone fine-tuned for 17-label multi-label
classification with a sigmoid head, saved to .h5 in Keras 2 style, exported
with its label names; it must return label strings and sigmoid confidences
from top_k, fine-tune through hub.KerasLayer, pass `hubexport check`, and
answer a photo sent as JPEG bytes as it answers the decoded image.
"""

import os
import sys

import numpy as np
import pytest

from hubexport import export
from hubexport.errors import UserError

SIZE = 32
TAGS = tuple(f"tag {i}" for i in range(17))


def _labels_file(directory, labels):
    path = os.path.join(directory, "labels.txt")
    with open(path, "w") as f:
        f.write("".join(f"{label}\n" for label in labels))
    return path


@pytest.fixture(scope="module")
def tagger(keras, tmp_path_factory):
    """(the .h5 file, the labels file, the Keras model as saved)."""
    directory = str(tmp_path_factory.mktemp("tagger"))
    keras.backend.clear_session()
    keras.utils.set_random_seed(3)
    backbone = keras.applications.VGG16(
        weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        backbone,
        keras.layers.Dense(len(TAGS), activation="sigmoid", name="tags"),
    ])
    path = os.path.join(directory, "tagger.h5")
    model.save(path)
    return path, _labels_file(directory, TAGS), model


@pytest.fixture(scope="module")
def tagger_export(tagger, tmp_path_factory):
    from hubexport import cli
    from absl import flags
    from absl.testing import flagsaver

    h5, labels, _ = tagger
    output = str(tmp_path_factory.mktemp("exports") / "tagger")
    with flagsaver.flagsaver():
        argv = flags.FLAGS(["hubexport", "export", f"--keras_model={h5}",
                            "--preprocessing=caffe", "--task=classification",
                            f"--labels={labels}", "--top_k=3", f"--output={output}"])
        assert cli.main(argv) == 0
    return output


def test_top_k_returns_label_strings_and_sigmoid_confidences(tagger, tagger_export):
    import tensorflow as tf
    from keras.applications import imagenet_utils

    *_, model = tagger
    loaded = tf.saved_model.load(tagger_export)
    images = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    result = loaded.signatures["top_k"](images=tf.constant(images))
    probabilities = model.predict(
        imagenet_utils.preprocess_input(255.0 * images, mode="caffe"), verbose=0)
    order = np.argsort(-probabilities, axis=1)[:, :3]
    np.testing.assert_allclose(
        result["confidences"].numpy(), np.take_along_axis(probabilities, order, 1), rtol=1e-4)
    assert result["labels"].numpy().astype(str).tolist() == [
        [TAGS[i] for i in row] for row in order]
    # __call__ still returns logits: their sigmoid is the model's output.
    np.testing.assert_allclose(tf.sigmoid(loaded(images)).numpy(), probabilities, rtol=1e-4)


def test_labels_and_activation_travel_in_the_model(tagger_export):
    with open(os.path.join(tagger_export, "assets", "labels.txt")) as f:
        assert tuple(f.read().splitlines()) == TAGS
    info = export.read_provenance(tagger_export)
    assert info["multi_label"] is True
    assert info["output"]["activation"] == "sigmoid"
    assert "each class is independent" in info["output"]["meaning"]
    assert info["source"]["kind"] == "keras_model"
    assert info["labels"] == {"count": 17, "file": "assets/labels.txt"}


def test_own_model_export_passes_hubexport_check(tagger_export):
    """The check fine-tunes it through hub.KerasLayer and TFSMLayer, and checks top_k."""
    from hubexport import checker, reports

    report = checker.check(tagger_export)
    assert not report.fails(strict=True), reports.text([report])
    by_check = {f.check: f.message for f in report.findings}
    assert "top_k: 3 of 17 labels by sigmoid" in by_check["top_k_labels"]
    assert "moved" in by_check["hub_fine_tuning"]


def test_jpeg_bytes_give_the_answer_of_the_decoded_photo(tagger_export):
    import tensorflow as tf

    loaded = tf.saved_model.load(tagger_export)
    rng = np.random.default_rng(1)
    # A smooth "photo", so JPEG keeps it recognizable.
    photo = tf.image.resize(rng.uniform(0, 255, (1, 4, 4, 3)), (SIZE, SIZE))[0]
    jpeg = tf.io.encode_jpeg(tf.cast(photo, tf.uint8), quality=95)
    served = loaded.signatures["serving_image_bytes"](image_bytes=tf.stack([jpeg, jpeg]))
    decoded = tf.image.convert_image_dtype(tf.io.decode_jpeg(jpeg), tf.float32)[None]
    # What C1 calls an image: decode_* then convert_image_dtype (x * (1/255));
    # the signature divides by 255, a last-bit difference.
    logits = loaded(decoded).numpy()
    np.testing.assert_allclose(served["logits"].numpy(), np.concatenate([logits] * 2),
                               rtol=1e-4, atol=1e-4)
    top = loaded.signatures["top_k"](images=decoded)
    assert served["labels"].numpy()[0].tolist() == top["labels"].numpy()[0].tolist()


def test_uint8_images_of_any_size_are_resized(tagger_export):
    import tensorflow as tf

    loaded = tf.saved_model.load(tagger_export)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 50, 41, 3), dtype=np.uint8)
    served = loaded.signatures["serving_uint8"](images=tf.constant(pixels))
    resized = tf.image.resize(pixels.astype("float32") / 255.0, (SIZE, SIZE),
                              antialias=True)
    np.testing.assert_allclose(served["logits"].numpy(), loaded(resized).numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("last", ["softmax", "none"])
def test_softmax_classifier_exports_logits(keras, tmp_path, last):
    """A last Softmax is removed (and applied again to compare with the file); a
    model that already gives logits is exported as it is."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(4)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="scores")(x)
    if last == "softmax":
        outputs = keras.layers.Softmax()(outputs)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / f"{last}.keras")
    model.save(path)
    plan = export.plan(keras_model=path, task="classification", preprocessing="unit")
    result = export.export(plan, str(tmp_path / "model"))
    assert result.max_relative_difference < 1e-4  # Includes the export vs. the file.
    info = export.read_provenance(result.path)
    assert (info["output"]["activation"], info["multi_label"]) == ("softmax", False)
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    logits = tf.saved_model.load(result.path)(images).numpy()
    expected = np.asarray(model(images))
    if last == "softmax":
        logits = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-6)
    if last == "none":
        return

    with pytest.raises(UserError, match="--multi_label contradicts .* softmax"):
        export.build_model(export.plan(keras_model=path, task="classification",
                                       preprocessing="unit", multi_label=True))


def test_custom_layers_load_from_a_module(keras, tmp_path, monkeypatch):
    module = tmp_path / "my_layers.py"
    module.write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='mine')\n"
        "class Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    keras.backend.clear_session()
    inputs = keras.Input((SIZE, SIZE, 3))
    x = my_layers.Doubler()(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(x))
    path = str(tmp_path / "custom.keras")
    keras.Model(inputs, x).save(path)
    del sys.modules["my_layers"]
    keras.saving.get_custom_objects().clear()

    plan = export.plan(keras_model=path, task="feature_vector", preprocessing="unit")
    with pytest.raises(UserError, match="--custom_objects=MODULE"):
        export.build_model(plan)
    plan = export.plan(keras_model=path, task="feature_vector", preprocessing="unit",
                       custom_objects="my_layers")
    assert export.export(plan, str(tmp_path / "model")).max_relative_difference < 1e-4


@pytest.mark.notf
@pytest.mark.parametrize("kwargs,message", [
    (dict(architecture="VGG16", keras_model="m.keras"), "exactly one of --architecture"),
    (dict(architecture="VGG16", preprocessing="caffe"), "--preprocessing applies only to"),
    (dict(architecture="VGG16", task="feature_vector", labels="x"), "only to --task=classification"),
    (dict(architecture="VGG16", feature_layer="fc1", task="classification"),
     "--feature_layer applies only to --task=feature_vector"),
    (dict(architecture="VGG16", top_k=3), "--top_k needs --labels"),
    (dict(architecture="VGG16", task="feature_vector", pooling="mean"), "allowed: avg, max"),
    (dict(keras_model="model.onnx"), "allowed: a .keras file"),
])
def test_refused_requests_say_what_is_allowed(kwargs, message):
    kwargs.setdefault("task", "classification")
    with pytest.raises(UserError, match=message):
        export.plan(**kwargs)


@pytest.mark.notf
@pytest.mark.parametrize("text,message", [
    ("a\n\nb\n", "line 2 is blank"),
    ("a\n b\n", "line 2 has leading or trailing whitespace"),
    ("", "is empty"),
])
def test_malformed_labels_files_are_refused(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        export.plan("VGG16", "classification", 224, "none", labels=str(path))


def test_wrong_number_of_labels_is_refused_before_anything_is_written(tagger, tmp_path):
    h5, _, _ = tagger
    labels = _labels_file(str(tmp_path), TAGS[:-1])
    plan = export.plan(keras_model=h5, task="classification", preprocessing="caffe",
                       labels=labels)
    with pytest.raises(UserError, match="has 16 labels but tagger.h5 has 17 classes"):
        export.export(plan, str(tmp_path / "model"))
    assert not os.path.exists(tmp_path / "model")
    with pytest.raises(UserError, match="has 16 labels but VGG16 has 1000 classes"):
        export.plan("VGG16", "classification", 224, "none", labels=labels)


def test_model_card_and_package(tagger_export, tmp_path, capsys):
    import tarfile

    from absl import flags
    from absl.testing import flagsaver

    from hubexport import cli

    with open(os.path.join(tagger_export, "assets.extra", "model_card.md")) as f:
        card = f.read()
    assert card.startswith("# Module hubexport/tagger/classification/1\n")
    for line in ("<!-- task: image-classification -->", "<!-- fine-tunable: true -->",
                 "<!-- format: saved_model_2 -->"):
        assert line in card
    assert "sigmoid" in card and "assets/labels.txt" in card

    archive = str(tmp_path / "tagger.tar.gz")
    with flagsaver.flagsaver():
        argv = flags.FLAGS(["hubexport", "package", tagger_export, f"--output={archive}"])
        assert cli.main(argv) == 0
        assert capsys.readouterr().out.strip() == archive
        assert cli.main(argv) == 2  # Exists: refused without --overwrite.
    assert "already exists" in capsys.readouterr().err
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"saved_model.pb", "variables/variables.index", "assets/labels.txt",
            "assets.extra/model_card.md"} <= names
    assert "fingerprint.pb" not in names


@pytest.fixture(scope="module")
def damaged(keras, tmp_path_factory):
    """Files as a failed download leaves them: name -> path (tiny Dense models)."""
    directory = tmp_path_factory.mktemp("damaged")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    files = {"random.keras": os.urandom(2048), "random.weights.h5": os.urandom(2048)}
    for name in ("model.keras", "model.h5", "model.weights.h5"):
        path = str(directory / name)
        model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
        with open(path, "rb") as f:
            whole = f.read()
        files[f"truncated_{name}"] = whole[: len(whole) // 2]
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "not a model")
    files["no_config.keras"] = archive.getvalue()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: str(directory / name) for name in files}


@pytest.mark.parametrize("flag,name,said", [
    ("keras_model", "random.keras", "is not a valid .keras file: File is not a zip file"),
    ("keras_model", "truncated_model.keras", "is not a valid .keras file: File is not a zip"),
    ("keras_model", "no_config.keras", "is not a valid .keras file: it holds no config.json"),
    ("keras_model", "truncated_model.h5", "is truncated or not an HDF5 file: "),
    ("weights", "truncated_model.weights.h5", "is truncated or not an HDF5 file: "),
    ("weights", "random.weights.h5", "is truncated or not an HDF5 file: "),
])
def test_a_damaged_file_is_named_for_what_it_is(damaged, flag, name, said, capsys):
    from absl import flags
    from absl.testing import flagsaver

    from hubexport import cli

    source = (["--keras_model", damaged[name], "--preprocessing=unit"] if flag == "keras_model"
              else ["--architecture=MobileNetV2", "--image_size=32", f"--weights={damaged[name]}"])
    with flagsaver.flagsaver():
        argv = flags.FLAGS(["hubexport", "export", *source, "--task=classification",
                            f"--output={os.path.dirname(damaged[name])}/out"])
        assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"hubexport: error: --{flag}={damaged[name]} {said}"), error
    assert "\n" not in error and "File not found" not in error and "does not match" not in error
