"""hubexport.publish.kaggle: the directory a Kaggle Models upload takes.

Most tests use fake SavedModel trees of small files (test_package.make_tree)
with a card rendered from a provenance; one saves a real tiny SavedModel and
loads it back from the upload directory. Nothing here reaches the network.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import save_doubler
from absl import flags
from absl.testing import flagsaver

from hubexport import cli
from hubexport.errors import UserError
from hubexport.publish import kaggle, model_card
from test_package import CLASSIFIER, FEATURE_VECTOR, FILES, make_tree

HANDLE = "jane/mobilenet-v2/tensorFlow2/feature-vector"
SAVED_MODEL_FILES = sorted(name for name in FILES if name != "fingerprint.pb")
# The keys, in order, of Kaggle's templates (`kaggle models init`,
# `kaggle models instances init`).
MODEL_KEYS = ["ownerSlug", "title", "slug", "subtitle", "isPrivate", "description",
              "publishTime", "provenanceSources"]
INSTANCE_KEYS = ["ownerSlug", "modelSlug", "instanceSlug", "framework", "overview", "usage",
                 "licenseName", "fineTunable", "trainingData", "modelInstanceType",
                 "baseModelInstanceId", "externalBaseModelUrl"]


def exported(root, provenance=FEATURE_VECTOR, card=True):
    """A fake hubexport export: the files, hubexport.json and (if `card`) its card."""
    files = dict(FILES)
    files["assets.extra/hubexport.json"] = json.dumps(provenance).encode()
    model = make_tree(root, files)
    if card:
        model_card.write(model, provenance)
    return model


def listing(directory):
    return sorted(os.path.relpath(os.path.join(folder, name), directory).replace(os.sep, "/")
                  for folder, _, names in os.walk(directory) for name in names)


def read(directory):
    with open(os.path.join(directory, kaggle.MODEL_METADATA)) as f:
        model = json.load(f)
    with open(os.path.join(directory, kaggle.INSTANCE_METADATA)) as f:
        instance = json.load(f)
    return model, instance


def kaggle_cli_accepts(model, instance):
    """What `kaggle models create` and `kaggle models instances create` check
    (kaggle_api_extended.py: get_or_fail keys, the template placeholders, types)."""
    for key in ("ownerSlug", "slug", "title", "isPrivate", "description"):
        assert key in model, key
    for key in ("ownerSlug", "modelSlug", "instanceSlug", "framework", "licenseName"):
        assert instance.get(key), key
    assert isinstance(model["isPrivate"], bool)
    assert isinstance(instance["fineTunable"], bool)
    assert isinstance(instance["trainingData"], list)
    assert "INSERT_" not in json.dumps([model, instance])
    assert instance["licenseName"] in kaggle.LICENSES


# --- what is written ----------------------------------------------------------


@pytest.mark.notf
def test_upload_holds_the_archive_files_and_both_metadata_files(tmp_path):
    model = exported(tmp_path / "model")
    output = kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="Apache 2.0")

    assert output == str(tmp_path / "upload")
    assert listing(output) == sorted(
        [*SAVED_MODEL_FILES, "assets.extra/model_card.md", *kaggle.METADATA_FILES])
    with open(os.path.join(output, "variables", "variables.data-00000-of-00001"), "rb") as f:
        assert f.read() == FILES["variables/variables.data-00000-of-00001"]
    assert sorted(os.listdir(tmp_path)) == ["model", "upload"]  # No staging left.


@pytest.mark.notf
def test_metadata_follows_kaggles_templates_and_the_card(tmp_path):
    model = exported(tmp_path / "model")
    metadata, instance = read(kaggle.package(model, HANDLE, str(tmp_path / "upload"),
                                             license_name="Apache 2.0"))

    kaggle_cli_accepts(metadata, instance)
    assert list(metadata) == MODEL_KEYS
    assert list(instance) == INSTANCE_KEYS + [kaggle.MARK_KEY]
    assert (metadata["ownerSlug"], metadata["slug"], metadata["title"]) == (
        "jane", "mobilenet-v2", "MobileNetV2")
    assert metadata["subtitle"] == ("Image feature vectors (1280 features) with ImageNet "
                                    "weights, exported from Keras by hubexport.")
    assert metadata["isPrivate"] is True
    description = metadata["description"]
    assert description.startswith("# MobileNetV2\n\nMobileNetV2: image feature vectors")
    assert "## Input" in description and "## Provenance" in description
    assert "asset-path" not in description and "# Module" not in description
    assert "keras.applications.MobileNetV2" in metadata["provenanceSources"]

    assert (instance["modelSlug"], instance["instanceSlug"], instance["framework"]) == (
        "mobilenet-v2", "feature-vector", "tensorFlow2")
    assert instance["fineTunable"] is True
    assert instance["trainingData"] == ["ImageNet (ILSVRC-2012-CLS)"]
    assert instance["licenseName"] == "Apache 2.0"
    assert (instance["modelInstanceType"], instance["baseModelInstanceId"],
            instance["externalBaseModelUrl"]) == ("Unspecified", 0, "")


@pytest.mark.notf
def test_usage_has_kaggles_sections_and_path_placeholder(tmp_path):
    model = exported(tmp_path / "model")
    _, instance = read(kaggle.package(model, HANDLE, str(tmp_path / "upload"),
                                      license_name="MIT"))
    usage = instance["usage"]

    headings = [line for line in usage.splitlines() if line.startswith("# ")]
    assert headings == ["# Model Format", "# Training Data", "# Model Inputs",
                        "# Model Outputs", "# Model Usage", "# Fine-tuning"]
    assert 'obj = hub.load("${PATH}")' in usage
    assert 'hub.KerasLayer("${PATH}", trainable=False)' in usage
    assert 'hub.KerasLayer("${PATH}", trainable=True' in usage
    assert "(PATH" not in usage  # Every code use of the card's PATH was replaced.
    assert "batch_norm_momentum" in usage and "serving_default" in usage


@pytest.mark.notf
def test_classifier_without_imagenet_weights_names_no_training_data(tmp_path):
    provenance = dict(CLASSIFIER, weights={"source": "none"})
    model = exported(tmp_path / "model", provenance)
    _, instance = read(kaggle.package(model, "jane/resnet50/tensorFlow2/classification",
                                      str(tmp_path / "upload"), license_name="MIT"))

    assert instance["trainingData"] == []
    assert "names no training dataset" in instance["usage"]
    assert "random initialization" in instance["usage"]


@pytest.mark.notf
def test_own_model_is_titled_with_the_model_slug(tmp_path):
    provenance = dict(FEATURE_VECTOR, architecture=None,
                      source={"kind": "keras_model", "path": "tagger.keras"})
    model = exported(tmp_path / "model", provenance)
    metadata, _ = read(kaggle.package(model, "jane/tagger/tensorFlow2/v1",
                                      str(tmp_path / "upload"), license_name="MIT"))

    assert metadata["title"] == "tagger"
    assert metadata["subtitle"].startswith("Image feature vectors")


@pytest.mark.notf
def test_without_a_card_the_provenance_gives_one_and_it_says_so(tmp_path):
    model = exported(tmp_path / "model", card=False)
    said = []
    metadata, instance = read(kaggle.package(model, HANDLE, str(tmp_path / "upload"),
                                             license_name="MIT", log=said.append))

    assert metadata["title"] == "MobileNetV2" and instance["fineTunable"] is True
    assert f"has no {model_card.CARD_FILE}" in said[0] and "hubexport.json" in said[0]
    assert "kagglehub.model_upload" in said[-1]


@pytest.mark.notf
def test_a_bare_saved_model_gets_what_its_files_show_and_it_says_so(tmp_path):
    files = {name: data for name, data in FILES.items() if not name.startswith("assets.extra")}
    model = make_tree(tmp_path / "model", files)
    said = []
    metadata, instance = read(kaggle.package(model, "jane/mine/tensorFlow2/v1",
                                             str(tmp_path / "upload"), license_name="MIT",
                                             log=said.append))

    kaggle_cli_accepts(metadata, instance)
    assert metadata["title"] == "mine"
    assert "without a model card" in metadata["description"]
    assert instance["fineTunable"] is False and instance["trainingData"] == []
    assert 'hub.load("${PATH}")' in instance["usage"]
    assert "no model card" in said[0]


@pytest.mark.notf
def test_a_card_not_in_tfhub_format_is_refused(tmp_path):
    model = exported(tmp_path / "model")
    with open(os.path.join(model, model_card.CARD_FILE), "w") as f:
        f.write("Some notes\n")
    with pytest.raises(UserError, match="is not a model card in tfhub.dev's format"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    assert not os.path.exists(tmp_path / "upload")


@pytest.mark.notf
def test_a_card_that_is_not_utf8_is_refused(tmp_path):
    model = exported(tmp_path / "model")
    with open(os.path.join(model, model_card.CARD_FILE), "wb") as f:
        f.write("# Mod\u00e8le\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"model_card.md is not UTF-8 text \(byte 5\); save "):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    assert not os.path.exists(tmp_path / "upload")


# --- handle and license -------------------------------------------------------


@pytest.mark.notf
@pytest.mark.parametrize("handle, message", [
    ("jane/mobilenet-v2", "is not OWNER/MODEL/tensorFlow2/VARIATION"),
    ("jane/mobilenet-v2/tensorFlow2/fv/3", "ends in a version; pass"),
    ("jane/mobilenet-v2/tensorflow2/fv", "did you mean tensorFlow2? allowed: tensorFlow2"),
    ("jane/mobilenet-v2/pyTorch/fv", "'pyTorch' is not Kaggle's name for a TF2 SavedModel"),
    ("jane/MobileNet_V2/tensorFlow2/fv", "model slug 'MobileNet_V2' is not a Kaggle slug; "
                                         "did you mean mobilenet-v2?"),
    ("jane/m/tensorFlow2/feature_vector", "variation slug 'feature_vector'"),
    ("jane/m/tensorFlow2/-fv", "variation slug '-fv'"),
    ("Jane Doe/m/tensorFlow2/fv", "owner slug 'Jane Doe'"),
])
def test_bad_handles_are_refused_in_one_line(handle, message):
    with pytest.raises(UserError, match=None) as error:
        kaggle.parse_handle(handle)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.notf
def test_a_good_handle_parses():
    handle = kaggle.parse_handle("jane_doe/mobilenet-v2/tensorFlow2/224-fv")
    assert (handle.owner, handle.model, handle.framework, handle.variation) == (
        "jane_doe", "mobilenet-v2", "tensorFlow2", "224-fv")
    assert str(handle) == "jane_doe/mobilenet-v2/tensorFlow2/224-fv"


@pytest.mark.notf
@pytest.mark.parametrize("given, name", [
    ("Apache 2.0", "Apache 2.0"),
    ("apache 2.0", "Apache 2.0"),
    ("Apache-2.0", "Apache 2.0"),
    ("CC BY 4.0", "Attribution 4.0 International (CC BY 4.0)"),
    ("cc0-1.0", "CC0: Public Domain"),
    ("MIT", "MIT"),
])
def test_license_names_take_kaggles_spelling(given, name):
    assert kaggle.canonical_license(given) == name


@pytest.mark.notf
def test_an_unknown_license_is_refused_with_the_closest():
    with pytest.raises(UserError, match="did you mean 'Apache 2.0'") as error:
        kaggle.canonical_license("Apache 2")
    assert "allowed: Apache 2.0; " in str(error.value)


@pytest.mark.notf
def test_a_license_is_required_unless_the_card_states_one(tmp_path):
    model = exported(tmp_path / "model")
    with pytest.raises(UserError, match="needs --license=NAME: the model card states no"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"))
    assert sorted(os.listdir(tmp_path)) == ["model"]

    path = os.path.join(model, model_card.CARD_FILE)
    with open(path) as f:
        card = f.read()
    with open(path, "w") as f:
        f.write(card.replace("<!-- format: saved_model_2 -->",
                             "<!-- format: saved_model_2 -->\n<!-- license: CC-BY-4.0 -->"))
    _, instance = read(kaggle.package(model, HANDLE, str(tmp_path / "upload")))
    assert instance["licenseName"] == "Attribution 4.0 International (CC BY 4.0)"


# --- what is refused, and the output's safety --------------------------------


@pytest.mark.notf
def test_files_the_archive_rules_refuse_are_refused_and_nothing_is_written(tmp_path):
    model = exported(tmp_path / "model")
    os.symlink("/etc/passwd", os.path.join(model, "assets", "link"))
    with pytest.raises(UserError, match="symlinks"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    os.remove(os.path.join(model, "assets", "link"))
    with open(os.path.join(model, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(UserError, match="notes.txt"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.notf
def test_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="is not a SavedModel"):
        kaggle.package(str(tmp_path / "folder"), HANDLE, str(tmp_path / "upload"),
                       license_name="MIT")


@pytest.mark.notf
def test_an_upload_it_wrote_is_replaced_only_with_overwrite(tmp_path):
    model = exported(tmp_path / "model")
    upload = str(tmp_path / "upload")
    kaggle.package(model, HANDLE, upload, license_name="MIT")
    with pytest.raises(UserError, match="already exists .written by hubexport package "
                                        "--kaggle.; pass --overwrite"):
        kaggle.package(model, HANDLE, upload, license_name="Apache 2.0")
    assert read(upload)[1]["licenseName"] == "MIT"

    kaggle.package(model, HANDLE, upload, license_name="Apache 2.0", overwrite=True)
    assert read(upload)[1]["licenseName"] == "Apache 2.0"
    assert sorted(os.listdir(tmp_path)) == ["model", "upload"]  # No retired copy left.


@pytest.mark.notf
def test_an_empty_directory_is_replaced_only_with_overwrite(tmp_path):
    model = exported(tmp_path / "model")
    (tmp_path / "upload").mkdir()
    with pytest.raises(UserError, match=r"already exists \(empty\)"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT",
                   overwrite=True)
    assert kaggle.INSTANCE_METADATA in os.listdir(tmp_path / "upload")


@pytest.mark.notf
@pytest.mark.parametrize("make, named", [
    (lambda d: (d / "photo.jpg").write_bytes(b"mine"), "has no model-instance-metadata.json"),
    (lambda d: (d / kaggle.INSTANCE_METADATA).write_text('{"framework": "tensorFlow2"}'),
     "has no model-instance-metadata.json marked"),
])
def test_a_users_folder_is_never_replaced(tmp_path, make, named):
    model = exported(tmp_path / "model")
    (tmp_path / "upload").mkdir()
    make(tmp_path / "upload")
    before = listing(tmp_path / "upload")
    with pytest.raises(UserError, match=f"is not a directory hubexport package --kaggle "
                                        f"wrote .it {named}"):
        kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT",
                       overwrite=True)
    assert listing(tmp_path / "upload") == before


@pytest.mark.notf
def test_a_file_added_to_its_upload_keeps_it_from_being_replaced(tmp_path):
    model = exported(tmp_path / "model")
    upload = kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    with open(os.path.join(upload, "assets", "my_notes.md"), "w") as f:
        f.write("keep me")  # Allowed by the archive rules: still ours.
    with open(os.path.join(upload, "README.md"), "w") as f:
        f.write("keep me")  # Not something this module writes.
    with pytest.raises(UserError, match="it also holds README.md"):
        kaggle.package(model, HANDLE, upload, license_name="MIT", overwrite=True)
    assert os.path.exists(os.path.join(upload, "README.md"))


@pytest.mark.notf
def test_outputs_that_are_the_model_or_hold_it_are_refused(tmp_path):
    model = exported(tmp_path / "model")
    with pytest.raises(UserError, match="is the SavedModel .* or inside it"):
        kaggle.package(model, HANDLE, model, license_name="MIT", overwrite=True)
    with pytest.raises(UserError, match="is the SavedModel .* or inside it"):
        kaggle.package(model, HANDLE, os.path.join(model, "assets.extra", "up"),
                       license_name="MIT")
    with pytest.raises(UserError, match="holds the SavedModel"):
        kaggle.package(model, HANDLE, str(tmp_path), license_name="MIT", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        kaggle.package(model, HANDLE, str(tmp_path / "file"), license_name="MIT")
    assert sorted(os.listdir(tmp_path)) == ["file", "model"]


@pytest.mark.notf
@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing_and_keeps_the_old_upload(tmp_path, monkeypatch,
                                                                   interrupt):
    model = exported(tmp_path / "model")
    upload = kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")
    copied = []

    def failing_copy(source, destination):
        copied.append(destination)
        if len(copied) == 3:
            raise interrupt
        with open(source, "rb") as s, open(destination, "wb") as d:
            d.write(s.read())

    monkeypatch.setattr(kaggle.shutil, "copyfile", failing_copy)
    with pytest.raises(type(interrupt)):
        kaggle.package(model, HANDLE, upload, license_name="Apache 2.0", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model", "upload"]
    assert read(upload)[1]["licenseName"] == "MIT"


@pytest.mark.notf
def test_an_output_that_appears_during_the_write_is_checked_again(tmp_path, monkeypatch):
    model = exported(tmp_path / "model")
    upload = tmp_path / "upload"
    original = kaggle._copy

    def user_makes_the_folder_meanwhile(*args):
        original(*args)
        upload.mkdir()
        (upload / "mine.txt").write_text("mine")

    monkeypatch.setattr(kaggle, "_copy", user_makes_the_folder_meanwhile)
    with pytest.raises(UserError, match="is not a directory hubexport package --kaggle wrote"):
        kaggle.package(model, HANDLE, str(upload), license_name="MIT")
    assert os.listdir(upload) == ["mine.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model", "upload"]


# --- a real SavedModel, the command line, no TensorFlow -----------------------


def test_a_real_saved_model_loads_from_the_upload(tmp_path):
    import tensorflow as tf

    model = save_doubler(str(tmp_path / "model"))  # x -> 2x, a tf.Variable inside.
    upload = kaggle.package(model, HANDLE, str(tmp_path / "upload"), license_name="MIT")

    assert "fingerprint.pb" not in os.listdir(upload)
    loaded = tf.saved_model.load(upload)
    assert loaded(tf.constant([1.5])).numpy().tolist() == [3.0]


def run(*args):
    with flagsaver.flagsaver():
        return cli.main(flags.FLAGS(["hubexport", *args]))


@pytest.mark.notf
def test_cli_writes_the_upload_and_prints_its_path(tmp_path, capsys):
    model = exported(tmp_path / "model")
    code = run("package", model, f"--kaggle={HANDLE}", "--license=CC BY 4.0",
               f"--output={tmp_path / 'upload'}")
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[-1] == str(tmp_path / "upload")
    assert "kagglehub.model_upload('jane/mobilenet-v2/tensorFlow2/feature-vector'" in out
    assert read(tmp_path / "upload")[1]["licenseName"] == (
        "Attribution 4.0 International (CC BY 4.0)")


@pytest.mark.notf
@pytest.mark.parametrize("args, message", [
    ([f"--kaggle={HANDLE}", "--license=MIT"], "package --kaggle needs --output=DIR"),
    (["--kaggle=jane/m/tensorflow2/v", "--license=MIT", "--output=o"],
     "did you mean tensorFlow2?"),
    ([f"--kaggle={HANDLE}", "--license=Apache", "--output=o"],
     "--license='Apache' is not one of Kaggle's license names; did you mean 'Apache 2.0'"),
    (["--license=MIT"], "--license is a flag of package --kaggle only"),
    ([f"--kaggle={HANDLE}", "--license=MIT", "--output=o", "--overwrite_any_saved_model"],
     "--overwrite_any_saved_model is not for package --kaggle"),
])
def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys, args, message):
    model = exported(tmp_path / "model")
    assert run("package", model, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubexport: error: ") and "\n" not in err
    assert message in err


@pytest.mark.notf
def test_the_module_does_not_import_tensorflow():
    code = "import sys, hubexport.publish.kaggle; print('tensorflow' in sys.modules)"
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True, cwd=repository)
    assert result.stdout.strip() == "False"
