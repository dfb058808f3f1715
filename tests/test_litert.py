"""hubexport litert and the litert_conversion check: serving_default as a LiteRT model.

Needs the litert extra (ai_edge_litert), which CI installs; its absence is
tested by hiding the module. Small models only: the session's MobileNetV2
feature vector converted at 32x32, a tiny classifier exported from a .keras
file, and the tiny SavedModels of tests/mutants.py.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from hubexport import check, checker, cli, export
from hubexport.errors import UserError
from hubexport.errors import is_interrupt
from hubexport.publish import litert, litert_compare, litert_files

import mutants

ONLY_LITERT = [name for name in check.ORDER if name != "litert_conversion"]


def _interpreter_output(path, images):
    """What a LiteRT user gets from the written file (not from hubexport's helpers)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return np.concatenate([list(runner(images=image[None]).values())[0] for image in images])


def _saved_model_output(directory, images):
    signature = tf.saved_model.load(directory).signatures["serving_default"]
    return list(signature(images=tf.constant(images)).values())[0].numpy()


def _saved(tmp_path_factory, build, name):
    path = str(tmp_path_factory.mktemp("litert") / name)
    build(path)
    return path


@pytest.fixture(scope="session")
def tiny_good(tmp_path_factory):
    """mutants.good: free size, no provenance (converts only with an image size)."""
    return _saved(tmp_path_factory, mutants.good, "good")


@pytest.fixture(scope="session")
def string_op_model(tmp_path_factory):
    return _saved(tmp_path_factory, mutants.string_op_serving, "strings")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory):
    """A 10-class classification export of a small .keras CNN at 32x32 (glorot weights:
    random-init MobileNetV2 logits are ~1e-13, too small for int8 to resolve)."""
    import keras

    directory = tmp_path_factory.mktemp("litert_classifier")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),  # The export removes it: logits.
    ])
    model.save(directory / "tiny.keras")
    path = str(directory / "tiny_classifier")
    export.export(export.plan(keras_model=str(directory / "tiny.keras"),
                              task="classification", preprocessing="unit"), path)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Twelve PNG files of different sizes (smooth gradients plus noise)."""
    directory = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    for i in range(12):
        height, width = 30 + 3 * i, 40
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0, 1, (1, 1, 3))
        noise = rng.uniform(0, 60, (height, width, 3))
        pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        tf.io.write_file(str(directory / f"{i:02d}.png"), tf.io.encode_png(pixels))
    return str(directory)


@pytest.mark.slow
def test_feature_vector_converts_and_equals_the_saved_model(mobilenet_fv, tmp_path):
    output = str(tmp_path / "mobilenet_v2.tflite")
    result = litert.convert(mobilenet_fv, output, image_size=32)
    images = litert.random_images(3, (32, 32))
    actual, expected = _interpreter_output(output, images), _saved_model_output(mobilenet_fv, images)
    assert actual.shape == expected.shape == (3, 1280)
    assert export.relative_difference(actual, expected) <= 1e-4
    assert result.comparison.relative_difference <= 1e-4
    assert "quantize=none" in result.summary and "(tolerance 0.0001)" in result.summary
    card = json.loads((tmp_path / "mobilenet_v2.json").read_text())
    assert card["format"] == "hubexport-litert/1" and card["input"]["shape"] == [None, 32, 32, 3]
    assert card["source_architecture"] == "MobileNetV2" and card["quantize"] == "none"
    assert sorted(os.listdir(tmp_path)) == ["mobilenet_v2.json", "mobilenet_v2.tflite"]


def test_int8_classification_reports_agreement(tiny_classifier, photos, tmp_path):
    output = str(tmp_path / "cls.tflite")
    result = litert.convert(tiny_classifier, output, quantize="int8",
                            representative_images=photos)
    comparison = result.comparison
    assert comparison.images == 12 and comparison.image_source == photos
    assert comparison.top5 == 1.0 and comparison.top1 >= 0.5, result.summary
    assert 0 < comparison.relative_difference < 0.5, result.summary
    assert "top-1 agreement" in result.summary and "top-5 agreement 100%" in result.summary
    card = json.loads((tmp_path / "cls.json").read_text())
    assert card["quantize"] == "int8" and card["comparison"]["top5"] == 1.0
    assert os.path.getsize(output) < os.path.getsize(
        litert.convert(tiny_classifier, str(tmp_path / "float.tflite")).path)


def test_int8_needs_representative_images(tiny_classifier, tmp_path):
    with pytest.raises(UserError, match="--quantize=int8 calibrates on images"):
        litert.convert(tiny_classifier, str(tmp_path / "x.tflite"), quantize="int8")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="notes.txt is not an image TensorFlow decodes"):
        litert.convert(tiny_classifier, str(tmp_path / "x.tflite"), quantize="int8",
                       representative_images=str(tmp_path))
    assert not (tmp_path / "x.tflite").exists()


def test_default_output_is_beside_the_model_and_overwrite_replaces_only_ours(tiny_good):
    output, card = tiny_good + ".tflite", tiny_good + ".json"
    assert litert.convert(tiny_good, image_size=32).path == output
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        litert.convert(tiny_good, image_size=32)
    litert.convert(tiny_good, image_size=40, overwrite=True)
    assert json.loads(open(card).read())["input"]["shape"] == [None, 40, 40, 3]
    with open(output, "ab") as f:  # No longer the file its card describes.
        f.write(b"changed")
    with pytest.raises(UserError, match="hubexport litert did not write it"):
        litert.convert(tiny_good, image_size=32, overwrite=True)
    assert open(output, "rb").read().endswith(b"changed")
    os.remove(card)
    with pytest.raises(UserError, match="its card good.json is missing"):
        litert.convert(tiny_good, image_size=32, overwrite=True)
    os.remove(output)


def test_a_free_size_model_without_provenance_needs_an_image_size(tiny_good, tmp_path):
    with pytest.raises(UserError, match=r"pass --image_size=N"):
        litert.convert(tiny_good, str(tmp_path / "x.tflite"))


@pytest.mark.parametrize("size", [0, -32])
def test_an_image_size_that_is_not_a_size_is_refused_before_loading(size, tmp_path):
    with pytest.raises(UserError, match=f"--image_size={size} is not a size; pass a positive"):
        litert.convert(str(tmp_path / "not even there"), image_size=size)


def test_a_serving_default_that_takes_other_than_float_rgb_is_refused(tmp_path):
    model = mutants.tiny_model()
    spec = tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")
    serving_default = tf.function(
        lambda images: {"feature_vector": model(tf.cast(images, tf.float32) / 255.0)},
        input_signature=[spec], autograph=False)
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = mutants._variables(model)
    tf.saved_model.save(root, str(tmp_path / "uint8"),
                        signatures={"serving_default": serving_default.get_concrete_function()})
    with pytest.raises(UserError, match=r"serving_default takes uint8 images of shape "
                                        r"\(None, 32, 32, 3\); LiteRT conversion takes float32"):
        litert.convert(str(tmp_path / "uint8"), str(tmp_path / "x.tflite"))
    assert sorted(os.listdir(tmp_path)) == ["uint8"]


def test_non_builtin_ops_are_refused_naming_them(string_op_model, tmp_path, capfd):
    with pytest.raises(litert.NotBuiltin) as refused:
        litert.convert(string_op_model, str(tmp_path / "x.tflite"), image_size=32)
    assert refused.value.ops == ["AsString", "StringLength"]
    assert "\n" not in str(refused.value)
    assert "error:" not in capfd.readouterr().err  # The converter's diagnostics are held back.
    assert os.listdir(tmp_path) == []


def test_a_conversion_that_differs_is_not_written(tiny_good, tmp_path, monkeypatch):
    real = litert.run_interpreter
    monkeypatch.setattr(litert_compare, "run_interpreter",
                        lambda *args: real(*args) * (1 + 1e-3))
    with pytest.raises(UserError, match="failed verification, nothing was written"):
        litert.convert(tiny_good, str(tmp_path / "x.tflite"), image_size=32)
    assert os.listdir(tmp_path) == []


def _fail_moving_the_card(monkeypatch, card):
    """os.replace fails for the card alone, after the .tflite has moved into place."""
    real = os.replace

    def replace(source, target):
        if os.fspath(target) == card:
            raise OSError("no space left on device")
        return real(source, target)

    monkeypatch.setattr(os, "replace", replace)


def test_a_card_that_cannot_be_written_leaves_neither_file(tiny_good, tmp_path, monkeypatch):
    output, card = str(tmp_path / "x.tflite"), str(tmp_path / "x.json")
    with monkeypatch.context() as patch:
        _fail_moving_the_card(patch, card)
        with pytest.raises(OSError, match="no space left"):
            litert.convert(tiny_good, output, image_size=32)
    assert os.listdir(tmp_path) == []
    litert.convert(tiny_good, output, image_size=32)  # Nothing stale is in the way.
    with monkeypatch.context() as patch:
        _fail_moving_the_card(patch, card)
        with pytest.raises(OSError, match="no space left"):
            litert.convert(tiny_good, output, image_size=40, overwrite=True)
    assert os.listdir(tmp_path) == []  # Not the new file beside the old card.


def test_a_file_changed_during_the_conversion_is_not_replaced(tiny_good, tmp_path, monkeypatch):
    """The output is asked about twice: before the conversion, and again just before
    the move; the user writes it in between (when the first answer was given)."""
    output = tmp_path / "x.tflite"
    real = litert_files.check_replaceable
    asked = []

    def user_writes_meanwhile(*args):
        asked.append(args)
        answer = real(*args)
        if len(asked) == 1:
            output.write_bytes(b"the user's own")
        return answer

    monkeypatch.setattr(litert_files, "check_replaceable", user_writes_meanwhile)
    with pytest.raises(UserError, match="hubexport litert did not write it"):
        litert.convert(tiny_good, str(output), image_size=32)
    assert len(asked) == 2  # Refused by the second question, after converting.
    assert os.listdir(tmp_path) == ["x.tflite"] and output.read_bytes() == b"the user's own"


def test_outputs_that_are_not_replaceable_are_refused_untouched(tiny_good, tmp_path):
    mine = tmp_path / "mine.tflite"
    mine.write_bytes(b"a model of my own")
    with pytest.raises(UserError, match="did not write it"):
        litert.convert(tiny_good, str(mine), image_size=32, overwrite=True)
    link = tmp_path / "link.tflite"
    link.symlink_to(mine)
    with pytest.raises(UserError, match="link.tflite exists and hubexport litert did not write"):
        litert.convert(tiny_good, str(link), image_size=32, overwrite=True)
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(UserError, match="folder.tflite is a directory; choose another"):
        litert.convert(tiny_good, str(tmp_path / "folder.tflite"), image_size=32,
                       overwrite=True)
    (tmp_path / "theirs.json").write_text('{"a": "card of something else"}')
    with pytest.raises(UserError, match="theirs.json exists and is not a card"):
        litert.convert(tiny_good, str(tmp_path / "theirs.tflite"), image_size=32)
    assert mine.read_bytes() == b"a model of my own"
    assert sorted(os.listdir(tmp_path)) == ["folder.tflite", "link.tflite", "mine.tflite",
                                            "theirs.json"]


def test_an_output_inside_or_equal_to_the_saved_model_is_refused(tiny_good, tmp_path):
    before = sorted(os.listdir(tiny_good))
    inside = os.path.join(tiny_good, "variables", "m.tflite")
    link = tmp_path / "pb.tflite"  # A link to the export's own file.
    link.symlink_to(os.path.join(tiny_good, "saved_model.pb"))
    (tmp_path / "into").symlink_to(tiny_good, target_is_directory=True)
    for output in inside, str(link), str(tmp_path / "into" / "m.tflite"):
        with pytest.raises(UserError, match="is inside the SavedModel; write it beside it"):
            litert.convert(tiny_good, output, image_size=32, overwrite=True)
    named = str(tmp_path / "named.tflite")  # A SavedModel directory called *.tflite.
    shutil.copytree(tiny_good, named)
    with pytest.raises(UserError, match="is inside the SavedModel"):
        litert.convert(named, named, image_size=32, overwrite=True)
    assert sorted(os.listdir(tiny_good)) == before == sorted(os.listdir(named))


def test_the_saved_model_runs_in_batches(monkeypatch):
    sizes = []

    def signature(images):
        sizes.append(int(images.shape[0]))
        return {"feature_vector": images[:, 0, 0, :] * 2.0}

    images = litert.random_images(7, (4, 4))
    actual = litert.saved_model_outputs(signature, images, batch=3)
    assert sizes == [3, 3, 1]
    np.testing.assert_array_equal(actual, images[:, 0, 0, :] * 2.0)


class _Interrupted:
    """Representative images stopped by Ctrl-C, as it comes back through pybind11
    from a Python callback of TensorFlow's C++ (the converter keeps no __cause__)."""

    def __iter__(self):
        raise RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized "
                           "active exception types: ORIGINAL KeyboardInterrupt REPLACED BY "
                           "KeyboardInterrupt")


def test_an_interrupt_during_conversion_is_not_a_conversion_error(tiny_good):
    model = tf.saved_model.load(tiny_good)
    with pytest.raises(BaseException) as stopped:
        litert.convert_signature(model, model.signatures["serving_default"], (32, 32), "int8",
                                 _Interrupted())
    assert is_interrupt(stopped.value) and not isinstance(stopped.value, UserError)


def _hide_litert(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)


def test_without_the_extra_conversion_is_one_line_naming_it(tiny_good, tmp_path, monkeypatch):
    _hide_litert(monkeypatch)
    with pytest.raises(UserError, match=r'pip install -e "\.\[litert\]"'):
        litert.convert(tiny_good, str(tmp_path / "x.tflite"), image_size=32)


def _litert_finding(path, **kwargs):
    report = checker.check(path, skip=ONLY_LITERT, **kwargs)
    (finding,) = [f for f in report.findings if f.check == "litert_conversion"]
    return report, finding


def test_the_check_passes_a_good_model(tiny_good):
    report, finding = _litert_finding(tiny_good)
    assert finding.level == "info" and finding.clause == "K3"
    assert "converts to LiteRT builtins" in finding.message and "at 224x224" in finding.message


def test_the_check_warns_unless_required(string_op_model):
    report, finding = _litert_finding(string_op_model)
    assert finding.level == "warning" and "AsString, StringLength" in finding.message
    assert not report.fails() and report.fails(strict=True)
    report, finding = _litert_finding(string_op_model, require=("litert",))
    assert finding.level == "error" and report.fails()


def test_the_check_is_unavailable_without_the_extra(tiny_good, monkeypatch):
    _hide_litert(monkeypatch)
    _, finding = _litert_finding(tiny_good)
    assert finding.level == "unavailable" and '.[litert]' in finding.message
    _, finding = _litert_finding(tiny_good, require=("litert",))
    assert finding.level == "error"


def test_require_takes_only_optional_consumers():
    with pytest.raises(UserError, match=r"--require names 'tfhub'; allowed: litert"):
        checker.validate("auto", require=("tfhub",))


def _cli(*args):
    with flagsaver.flagsaver():
        return cli.main(flags.FLAGS(["hubexport", *args]))


def test_cli_converts_and_prints_one_summary_line(tiny_good, tmp_path, capsys):
    output = tmp_path / "good.tflite"
    assert _cli("litert", tiny_good, "--image_size=32", f"--output={output}",
                "--quantize=dynamic") == 0
    progress, last = capsys.readouterr().out.strip().splitlines()  # As the README says.
    assert progress == "hubexport: converting serving_default at 32x32 (quantize=dynamic)"
    assert last.startswith(f"{output}: LiteRT serving_default at 32x32") and "dynamic" in last
    assert _cli("litert", tiny_good, "--require=litert") == 2
    assert "--require is not a flag of litert" in capsys.readouterr().err


def test_cli_help_says_only_serving_default_converts():
    text = cli.help_text(["litert"])
    assert "serving_default only" in text and "need Flex" in text
    assert "--quantize" in text and "--representative_images" in text
