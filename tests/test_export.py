"""The exporter: numbers, the reusable API, the three consumers, safe writes."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import FV_SIZE, fit_through_hub, reference_model, save_random_weights
from test_cli import read_only_dir  # noqa: F401 (a fixture)
from hubexport import export
from hubexport.export import write
from hubexport.errors import UserError


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, height, width, 3)).astype("float32")


def _relative(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# One architecture per preprocessing family (HUB_CONTRACT C1 and the issue's
# "equal to keras.applications.X applied to preprocess_input(255 * x)"); the
# "tf" family is MobileNetV2, in test_feature_vector_has_free_size_...
FAMILIES = [
    ("VGG16", "caffe", "feature_vector", 32),
    pytest.param("DenseNet121", "torch", "feature_vector", 32, marks=pytest.mark.slow),
    pytest.param("EfficientNetB0", "raw255", "feature_vector", 32, marks=pytest.mark.slow),
    ("VGG16", "caffe", "classification", 32),
    pytest.param("MobileNetV3Small", "raw255", "classification", 32, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("architecture,family,task,size", FAMILIES)
def test_export_equals_keras_application_on_preprocessed_input(
        keras, tmp_path, architecture, family, task, size):
    kwargs = dict(input_shape=(size, size, 3))
    if task == "classification":
        kwargs["classifier_activation"] = None
    weights = save_random_weights(keras, str(tmp_path), architecture, **kwargs)
    plan = export.plan(architecture, task, size, weights)
    assert plan.architecture.preprocessing == family
    # The object the verification loaded from the files now in place.
    loaded = export.export(plan, str(tmp_path / "model"), keep_loaded=True).loaded

    import tensorflow as tf

    images = _images(3, size, size)
    actual = loaded(images).numpy()

    reference = reference_model(keras, architecture, weights, task, size)
    module = getattr(keras.applications, plan.architecture.module)
    expected = np.asarray(reference(module.preprocess_input(255.0 * images)))
    assert actual.dtype == np.float32
    assert actual.shape == (3, plan.architecture.output_size(task))
    assert _relative(actual, expected) < 1e-4

    # The gradient is the one Keras computes (the custom gradients are
    # saved while tensors compare by identity: write._save).
    # One plain tape each: a persistent one would have TensorFlow prepare
    # higher-order gradients of the restored function, many times slower.
    x = tf.constant(images[:2])
    gradients = []
    for model in (loaded, lambda inputs: reference(module.preprocess_input(255.0 * inputs))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            output = model(x)
        gradients.append(tape.gradient(output, x).numpy())
    assert _relative(*gradients) < 1e-3
    # Fine-tunable after reload: every trainable variable gets a gradient
    # (EfficientNet's swish needs its custom gradient saved). This call
    # updates the batch-norm statistics, so it comes last.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(loaded(images[:2], training=True) ** 2)
    gradients = tape.gradient(loss, loaded.trainable_variables)
    assert all(g is not None for g in gradients)


def test_tensors_compare_by_identity_only_inside_the_block():
    import tensorflow as tf

    one = tf.constant(1.0)
    with pytest.raises(RuntimeError):
        with write._tensors_compared_by_identity(True):
            assert (one == tf.constant(1.0)) is False  # Identity: another tensor.
            raise RuntimeError
    assert bool(one == tf.constant(1.0))  # Elementwise again, after an error too.
    with write._tensors_compared_by_identity(False):
        assert bool(one == tf.constant(1.0))


def test_feature_vector_has_free_size_and_constant_features(keras, mobilenet_fv, mobilenet_weights):
    import tensorflow as tf

    from hubexport import architectures

    assert architectures.ARCHITECTURES["MobileNetV2"].preprocessing == "tf"
    loaded = tf.saved_model.load(mobilenet_fv)
    reference = reference_model(keras, "MobileNetV2", mobilenet_weights, "feature_vector", None)
    for height, width in [(FV_SIZE, FV_SIZE), (96, 80), (33, 47)]:
        images = _images(2, height, width)
        actual = loaded(images).numpy()
        assert actual.shape == (2, 1280)
        expected = np.asarray(reference(keras.applications.mobilenet_v2.preprocess_input(255.0 * images)))
        assert _relative(actual, expected) < 1e-4


def test_reusable_api(mobilenet_fv):
    import tensorflow as tf
    import tensorflow_hub as hub

    obj = hub.load(mobilenet_fv)
    variables = {id(v) for v in obj.variables}
    assert obj.trainable_variables
    assert all(v.trainable for v in obj.trainable_variables)
    assert {id(v) for v in obj.trainable_variables} <= variables
    assert len(obj.trainable_variables) < len(obj.variables)  # BN statistics.
    assert list(obj.regularization_losses) == []  # Applications have none.

    images = tf.constant(_images(2, FV_SIZE, FV_SIZE))
    default = obj(images).numpy()
    np.testing.assert_array_equal(default, obj(images, training=False).numpy())
    # training=True uses batch statistics, so the output differs.
    assert not np.allclose(obj(images, training=True).numpy(), default)
    # Every variable a call captures is listed (R2).
    for fn in (obj.__call__, obj.serve, obj.serve_training):
        for concrete in fn._list_all_concrete_functions_for_serialization():
            assert {id(v) for v in concrete.variables} <= variables


def test_regularization_losses_come_from_the_models_regularizers(keras, tmp_path):
    import tensorflow as tf

    from hubexport import reusable

    keras.backend.clear_session()
    model = keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Conv2D(4, 3, kernel_regularizer=keras.regularizers.L2(0.5)),
        keras.layers.Conv2D(4, 3, bias_regularizer=keras.regularizers.L1(0.25),
                            bias_initializer="ones"),
        keras.layers.GlobalAveragePooling2D(),
    ])
    root, signatures, _ = reusable.make_root(model, "unit", "feature_vector")
    tf.saved_model.save(root, str(tmp_path), signatures=signatures)
    loaded = tf.saved_model.load(str(tmp_path))
    values = [float(fn()) for fn in loaded.regularization_losses]
    kernel = model.layers[0].kernel.numpy()
    assert values == pytest.approx([0.5 * float(np.sum(kernel**2)), 0.25 * 4.0], rel=1e-5)


def test_fine_tunes_through_hub_keras_layer(mobilenet_fv):
    for trainable in (True, False):
        layer, _, _, trainable_before, frozen_before = fit_through_hub(mobilenet_fv, trainable)
        if trainable:
            moved = [not np.array_equal(b, w.numpy())
                     for b, w in zip(trainable_before, layer.trainable_weights)]
            assert np.mean(moved) > 0.9, "the backbone's weights must move"
            stats = [not np.array_equal(b, w.numpy())
                     for b, w in zip(frozen_before, layer.non_trainable_weights)]
            assert np.mean(stats) > 0.9, "batch-norm statistics must update"
        else:
            assert layer.trainable_weights == []
            assert all(np.array_equal(b, w.numpy())
                       for b, w in zip(frozen_before, layer.non_trainable_weights))


def test_keras3_tfsmlayer_predicts_and_fine_tunes(keras, mobilenet_fv):
    layer = keras.layers.TFSMLayer(
        mobilenet_fv, call_endpoint="serve", call_training_endpoint="serve_training")
    inputs = keras.Input((FV_SIZE, FV_SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = _images(8, FV_SIZE, FV_SIZE)
    assert model.predict(images, verbose=0).shape == (8, 3)
    before = [w.numpy() for w in layer.trainable_weights]
    assert before
    model.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert np.mean(moved) > 0.9


def test_serving_default_signature(mobilenet_fv):
    import tensorflow as tf

    signature = tf.saved_model.load(mobilenet_fv).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert list(signature.structured_input_signature[1]) == ["images"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None, None, 3]
    outputs = signature(images=tf.constant(_images(2, FV_SIZE, FV_SIZE)))
    assert list(outputs) == ["feature_vector"]
    assert outputs["feature_vector"].shape == (2, 1280)


def test_provenance_describes_the_export(mobilenet_fv, mobilenet_weights):
    with open(os.path.join(mobilenet_fv, "assets.extra", "hubexport.json")) as f:
        info = json.load(f)
    assert info["architecture"] == "MobileNetV2"
    assert info["task"] == "feature_vector"
    assert info["input"]["shape"] == [None, None, None, 3]
    assert info["input"]["min_size"] == 32
    assert info["preprocessing"] == "tf"
    assert info["output"] == {"key": "feature_vector", "size": 1280,
                              "meaning": "global average pool of the last feature map"}
    from hubexport import weights

    assert info["weights"]["sha256"] == weights.sha256_of(mobilenet_weights)
    assert info["verification"]["max_relative_difference"] < 1e-4
    assert set(info["versions"]) == {"hubexport", "tensorflow", "keras", "python"}


def test_load_provenance_is_the_file_typed(mobilenet_fv, tmp_path):
    from hubexport import contract

    loaded = export.load_provenance(mobilenet_fv)
    assert isinstance(loaded, contract.Provenance) and loaded.is_hubexport
    assert loaded.to_json() == export.read_provenance(mobilenet_fv)
    assert (loaded.architecture, loaded.output.size, loaded.input.min_size) == (
        "MobileNetV2", 1280, 32)
    # No file, or a file that is not a JSON object: an empty record, as read_provenance's None.
    assert export.load_provenance(str(tmp_path)) == contract.Provenance()
    (tmp_path / export.PROVENANCE_FILE).parent.mkdir()
    (tmp_path / export.PROVENANCE_FILE).write_text("[1, 2]")
    assert export.read_provenance(str(tmp_path)) == [1, 2]
    assert export.load_provenance(str(tmp_path)).task is None


@pytest.mark.slow
def test_weights_file_from_the_topless_model(keras, tmp_path):
    weights = save_random_weights(keras, str(tmp_path), "MobileNetV2", include_top=False,
                                  input_shape=(32, 32, 3))
    plan = export.plan("MobileNetV2", "feature_vector", 32, weights)
    result = export.export(plan, str(tmp_path / "model"))
    assert result.max_relative_difference < 1e-4
    model = export.build_model(plan).model
    reference = reference_model(keras, "MobileNetV2", weights, "feature_vector", 32)
    for ours, theirs in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_mismatched_weights_file_is_a_clear_error(keras, tmp_path, mobilenet_weights):
    plan = export.plan("ResNet50", "feature_vector", 32, mobilenet_weights)
    with pytest.raises(UserError, match=r"does not match ResNet50 feature_vector .*save_weights"):
        export.export(plan, str(tmp_path / "model"))
    assert os.listdir(tmp_path) == []


def test_weights_file_for_another_classifier_size_is_refused(keras, tmp_path):
    weights = save_random_weights(keras, str(tmp_path), "VGG16", input_shape=(32, 32, 3))
    plan = export.plan("VGG16", "classification", 64, weights)
    with pytest.raises(UserError, match="does not match VGG16 classification at 64x64"):
        export.build_model(plan)


def test_legacy_h5_weights_from_tf_keras(keras, tmp_path):
    import tf_keras

    tf_keras.utils.set_random_seed(2)
    legacy = tf_keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "legacy.h5")
    legacy.save_weights(path)
    plan = export.plan("MobileNetV2", "feature_vector", 32, path)
    model = export.build_model(plan).model
    np.testing.assert_array_equal(
        model.get_layer("Conv1").kernel.numpy(), legacy.get_layer("Conv1").kernel.numpy())


def test_imagenet_offline_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    import urllib.error

    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path / "keras_home"))
    plan = export.plan("MobileNetV2", "feature_vector", 224, "imagenet")
    with pytest.raises(UserError) as error:
        export.export(plan, str(tmp_path / "model"))
    message = str(error.value)
    fname = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert "\n" not in message
    assert f"({fname} from https://" in message
    assert os.path.join(str(tmp_path / "keras_home"), "models", fname) in message
    assert not os.path.exists(tmp_path / "model")


def _old_export(directory, files=None):
    """A previous hubexport export, as far as replacing it goes (its provenance)."""
    files = files or {"saved_model.pb": b"old graph", "variables/variables.index": b"old"}
    files = {**files, export.PROVENANCE_FILE: json.dumps({"format": "hubexport-provenance/1"})}
    for relative, data in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return _tree(directory)


def _tree(directory):
    """{relative path: bytes} of every file below `directory`."""
    return {os.path.relpath(os.path.join(root, name), directory):
            open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(directory) for name in names}


@pytest.mark.slow
def test_existing_output_needs_overwrite_and_survives_a_failure(tmp_path, monkeypatch):
    output = tmp_path / "model"
    old = _old_export(output)
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export.export(plan, str(output))

    def broken_verify(*args, **kwargs):
        raise export.VerificationError("simulated mismatch")

    monkeypatch.setattr(export, "verify", broken_verify)
    with pytest.raises(export.VerificationError):
        export.export(plan, str(output), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # No partial directory.
    assert _tree(output) == old

    monkeypatch.undo()
    export.export(plan, str(output), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert (output / "saved_model.pb").read_bytes() != old["saved_model.pb"]
    assert not (output / "variables" / "variables.index").read_bytes() == b"old"
    assert oct(os.stat(output).st_mode & 0o777) != oct(0o700)


def _never_built(monkeypatch):
    def build_model(*args, **kwargs):
        raise AssertionError("the model was built before the output was refused")

    monkeypatch.setattr(export, "build_model", build_model)


USERS_FOLDER = {"README.md": b"# mine", "src/code.py": b"print('mine')", "notes.txt": b"x"}


@pytest.mark.notf
@pytest.mark.parametrize("flags", [{"overwrite": True}, {"overwrite_any_saved_model": True}])
def test_overwrite_refuses_a_folder_of_the_users_files(tmp_path, monkeypatch, flags):
    output = tmp_path / "myproject"
    for relative, data in USERS_FOLDER.items():
        (output / relative).parent.mkdir(parents=True, exist_ok=True)
        (output / relative).write_bytes(data)
    _never_built(monkeypatch)
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(UserError) as refused:
        export.export(plan, str(output), **flags)
    message = str(refused.value)
    assert f"--output={output} holds 3 entries and no saved_model.pb: README.md, notes.txt, src/;" in message
    assert "\n" not in message
    assert _tree(output) == {k.replace("/", os.sep): v for k, v in USERS_FOLDER.items()}
    assert sorted(os.listdir(tmp_path)) == ["myproject"]


def _saved_model_of_someone_else(directory):
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"their graph")
    (directory / "variables" / "variables.index").write_bytes(b"theirs")
    return _tree(directory)


def _staging(tmp_path, name="model"):
    staging = tmp_path / f".{name}.partial-test"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"new graph")
    return staging


@pytest.mark.notf
def test_a_saved_model_hubexport_did_not_write_needs_the_second_flag(tmp_path, monkeypatch):
    output = tmp_path / "model"
    theirs = _saved_model_of_someone_else(output)
    _never_built(monkeypatch)
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(UserError, match="is a SavedModel that hubexport did not write .* pass "
                                        "--overwrite_any_saved_model"):
        export.export(plan, str(output), overwrite=True)
    assert _tree(output) == theirs
    # A provenance file that is not hubexport's (not a JSON object of its format)
    # does not make it hubexport's.
    (output / "assets.extra").mkdir()
    for text in ("[1, 2]", "not json", '{"format": "other/1"}'):
        (output / export.PROVENANCE_FILE).write_text(text)
        with pytest.raises(UserError, match="did not write"):
            export.check_output(str(output), overwrite=True)
    export._install(str(_staging(tmp_path)), str(output), overwrite_any_saved_model=True)
    assert _tree(output) == {"saved_model.pb": b"new graph"}
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.notf
def test_an_empty_directory_is_replaced_with_overwrite(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export.check_output(str(output))
    export._install(str(_staging(tmp_path)), str(output), overwrite=True)
    assert _tree(output) == {"saved_model.pb": b"new graph"}


def test_an_output_that_is_or_holds_an_input_is_refused(keras, tmp_path, monkeypatch,
                                                       mobilenet_weights):
    weights = tmp_path / "MobileNetV2.weights.h5"
    shutil.copyfile(mobilenet_weights, weights)  # A real one: the plan reads it.
    original = weights.read_bytes()
    plan = export.plan("MobileNetV2", "feature_vector", FV_SIZE, str(weights))
    _never_built(monkeypatch)
    for output, word in ((tmp_path, "contains"), (weights, "is")):
        with pytest.raises(UserError, match=f"--output={output} {word} the input {weights}; "):
            export.export(plan, str(output), overwrite_any_saved_model=True)
    # Even when the folder is an export of hubexport's (the labels beside it).
    labels = tmp_path / "export" / "labels.txt"
    _old_export(tmp_path / "export")
    labels.write_text("cat\n")
    with pytest.raises(UserError, match="contains the input"):
        export.export(plan, str(tmp_path / "export"), overwrite=True, inputs=(str(labels),))
    assert weights.read_bytes() == original and labels.exists()


@pytest.mark.notf
def test_the_output_is_checked_again_when_it_is_moved_into_place(tmp_path):
    """A user's folder that appeared (or changed) during a long export is kept."""
    output = tmp_path / "model"
    staging = _staging(tmp_path)
    export.check_output(str(output), overwrite=True)  # What export() saw at the start.
    (output / "src").mkdir(parents=True)
    (output / "src" / "code.py").write_text("mine")
    with pytest.raises(UserError, match="holds 1 entry and no saved_model.pb: src/"):
        export._install(str(staging), str(output), overwrite=True)
    assert _tree(output) == {os.path.join("src", "code.py"): b"mine"}
    assert sorted(os.listdir(tmp_path)) == [".model.partial-test", "model"]


def _delete_then_rename(staging, output, **replace):
    """The unsafe way to replace an export, which the test below must catch."""
    import shutil

    shutil.rmtree(output)
    os.rename(staging, output)


def _fake_export_steps(monkeypatch):
    """export() without TensorFlow: its steps write small files."""
    import types

    monkeypatch.setattr(export, "build_model", lambda plan, log: types.SimpleNamespace(model=None))
    monkeypatch.setattr(export, "_save", lambda built, plan, d: _staged(d))
    monkeypatch.setattr(export, "_load", lambda directory: None)
    monkeypatch.setattr(export, "verify", lambda *args: 0.0)
    monkeypatch.setattr(export, "_write_provenance", lambda d, *args: _old_export(
        __import__("pathlib").Path(d), {"saved_model.pb": b"new graph"}))


def _staged(directory):
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
        f.write(b"new graph")


@pytest.mark.parametrize("install,survives", [(None, True), (_delete_then_rename, False)])
def test_a_failure_inside_the_final_move_leaves_the_previous_export_whole(
        tmp_path, monkeypatch, install, survives):
    output = tmp_path / "model"
    old = _old_export(output, {"saved_model.pb": b"old graph", "variables/variables.index": b"i",
                               "variables/variables.data-00000-of-00001": b"w" * 1000})
    _fake_export_steps(monkeypatch)
    if install:  # The unsafe replacement fails this test: it must.
        monkeypatch.setattr(export, "_install", install)
    rename = os.rename
    moves = []

    def rename_failing_the_move_in(source, destination):
        moves.append(os.path.basename(source))
        if ".partial-" in os.path.basename(source):  # staging -> output
            raise OSError(28, "No space left on device (injected)")
        return rename(source, destination)

    monkeypatch.setattr(os, "rename", rename_failing_the_move_in)
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(OSError, match="injected"):
        export.export(plan, str(output), overwrite=True)
    assert any(".partial-" in move for move in moves)  # It did fail inside the move.
    assert (output.exists() and _tree(output) == old) is survives
    if survives:
        # Moved aside, the failed move in, moved back.
        assert [".partial-" in move for move in moves] == [False, True, False]
        assert sorted(os.listdir(tmp_path)) == ["model"]  # No staging, no retired directory.


def _verify_against(expected, actual, tmp_path):
    """export.verify of a fake reload that answers `actual` where Keras answers `expected`."""
    import types

    import tensorflow as tf

    expected, actual = (np.asarray(a, dtype=np.float32) for a in (expected, actual))
    loaded = lambda images: tf.constant(actual)  # noqa: E731
    loaded.serve = loaded
    loaded.signatures = {"serving_default": lambda images: {"feature_vector": tf.constant(actual)}}
    source = types.SimpleNamespace(reference_preprocess_input=lambda: lambda x: x)
    plan = types.SimpleNamespace(architecture=None, keras_model=source, task="feature_vector",
                                 labels=None, jit_compile=False, describe=lambda: "fake")
    built = types.SimpleNamespace(size=(2, 2), output_size=expected.shape[1], as_saved=None,
                                  activation=None)
    return export.verify(loaded, lambda x: tf.constant(expected), plan, built)


def test_verification_refuses_a_difference_just_above_the_relative_tolerance(tmp_path):
    assert export.TOLERANCE == 1e-4
    # Largest magnitude 10: relative 1.01e-4 is 1.01e-3 absolute, so an
    # absolute tolerance, or a looser one, lets the first through.
    expected = [[10.0, 0.0, -3.0], [1.0, 2.0, 0.5]]
    above = [[10.0, 1.01e-3, -3.0], [1.0, 2.0, 0.5]]
    below = [[10.0, 0.99e-3, -3.0], [1.0, 2.0, 0.5]]
    with pytest.raises(export.VerificationError, match="by 1.01e-04 .relative., more than 1e-04"):
        _verify_against(expected, above, tmp_path)
    assert _verify_against(expected, below, tmp_path) == pytest.approx(0.99e-4, rel=1e-3)


@pytest.mark.parametrize("where", ["export", "reference"])
def test_verification_refuses_nan(tmp_path, where):
    good = [[1.0, 2.0], [3.0, 4.0]]
    nan = [[1.0, float("nan")], [3.0, 4.0]]
    expected, actual = (good, nan) if where == "export" else (nan, good)
    with pytest.raises(export.VerificationError, match="differs from the Keras model by nan"):
        _verify_against(expected, actual, tmp_path)


@pytest.mark.notf
def test_a_read_only_output_parent_is_refused_before_the_build(tmp_path, monkeypatch,
                                                                read_only_dir):
    _never_built(monkeypatch)
    output = os.path.join(read_only_dir, "new", "model")
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(UserError, match=f"--output={output} cannot be written: {read_only_dir} "
                                        "is not writable"):
        export.export(plan, output)


def test_interrupt_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify", interrupted)  # After saving.
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none")
    with pytest.raises(KeyboardInterrupt):
        export.export(plan, str(tmp_path / "model"))
    assert os.listdir(tmp_path) == []


@pytest.mark.notf
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # The swallowing.
def test_an_interrupt_a_library_swallowed_still_stops_every_install(tmp_path):
    """SIGTERM's KeyboardInterrupt raised inside a __del__ is printed as "Exception
    ignored in" and lost (TensorFlow's ConcreteFunctionGarbageCollector.__del__
    runs during a save: an interrupted export_all worker used to go on and install
    its export). The process remembers it, and installs nothing after it."""
    import signal

    from hubexport import atomic, startup

    class SwallowsTheInterrupt:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # The handler raises in here.

    staging = tmp_path / ".model.partial-1"
    staging.mkdir()
    (tmp_path / "report.json").write_text("old")
    startup.interrupt_on_sigterm()
    try:
        SwallowsTheInterrupt()  # Freed at once; the interrupt goes nowhere.
        with pytest.raises(KeyboardInterrupt):
            atomic.replace_directory(str(staging), str(tmp_path / "model"))
        with pytest.raises(KeyboardInterrupt):
            atomic.write_json(str(tmp_path / "report.json"), {"new": 1})
        assert sorted(os.listdir(tmp_path)) == [".model.partial-1", "report.json"]
        assert (tmp_path / "report.json").read_text() == "old"
        startup.interrupt_on_sigterm()  # A new command of the same process starts afresh.
        atomic.replace_directory(str(staging), str(tmp_path / "model"))
        assert sorted(os.listdir(tmp_path)) == ["model", "report.json"]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_grappler_is_off_only_inside_the_block():
    import tensorflow as tf

    from hubexport import grappler

    def grappler_disabled():
        return tf.config.optimizer.get_experimental_options().get(
            "disable_meta_optimizer", False)

    assert not grappler_disabled()
    with pytest.raises(RuntimeError):
        with grappler.disabled():
            assert grappler_disabled()
            raise RuntimeError("a failing export")
    assert not grappler_disabled()


# Intermediate features and the batch_norm_momentum keyword.


def test_feature_layer_of_an_application_with_max_pooling(keras, tmp_path):
    weights = save_random_weights(keras, str(tmp_path), "VGG19", include_top=False,
                                  input_shape=(32, 32, 3))
    plan = export.plan("VGG19", "feature_vector", 32, weights,
                       feature_layer="block4_pool", pooling="max")
    result = export.export(plan, str(tmp_path / "model"))
    import tensorflow as tf

    keras.backend.clear_session()
    vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
    vgg.load_weights(weights)
    images = np.random.default_rng(0).uniform(0, 1, (2, 48, 40, 3)).astype("float32")
    inputs = keras.applications.vgg19.preprocess_input(255.0 * images)
    features = np.max(keras.Model(vgg.input, vgg.get_layer("block4_pool").output)(inputs),
                      axis=(1, 2))
    loaded = tf.saved_model.load(result.path)
    np.testing.assert_allclose(loaded(images).numpy(), features, rtol=1e-4, atol=1e-4)
    info = export.read_provenance(result.path)
    assert info["output"]["meaning"] == "global max pool of layer block4_pool"
    assert (info["output"]["size"], info["input"]["size_is_free"]) == (512, True)


def test_feature_layer_of_the_classifier_fixes_the_size(tmp_path):
    plan = export.plan("VGG16", "feature_vector", 32, "none", feature_layer="fc2")
    built = export.build_model(plan)
    assert (built.input_hw, built.output_size) == ((32, 32), 4096)
    with pytest.raises(UserError, match="--feature_layer=block9_pool is not a layer.*"
                                        "did you mean block5_pool"):
        export.build_model(export.plan("VGG16", "feature_vector", 32, "none",
                                       feature_layer="block9_pool"))


def test_batch_norm_momentum_sets_how_fast_statistics_follow_a_batch(mobilenet_fv):
    """hub.KerasLayer(arguments=dict(batch_norm_momentum=m)): a training call
    moves each moving mean by (1 - m) of its distance to the batch mean."""
    import tensorflow as tf
    import tensorflow_hub as hub

    info = export.read_provenance(mobilenet_fv)
    assert info["batch_norm_momentum"] == 0.999  # MobileNetV2's own.
    images = tf.constant(np.random.default_rng(0).uniform(0, 1, (4, 64, 64, 3)),
                         tf.float32)
    steps = {}
    for momentum in (0.0, 0.5, 0.999):
        layer = hub.KerasLayer(mobilenet_fv, trainable=True,
                               arguments=dict(batch_norm_momentum=momentum))
        mean = next(v for v in layer.non_trainable_weights if "moving_mean" in v.name)
        before = mean.numpy()
        layer(images, training=True)
        steps[momentum] = np.abs(mean.numpy() - before).sum()
    assert steps[0.0] > 0
    np.testing.assert_allclose(steps[0.5] / steps[0.0], 0.5, rtol=1e-3)
    np.testing.assert_allclose(steps[0.999] / steps[0.0], 0.001, rtol=1e-2)


# --- the package's layout ---------------------------------------------------


def _imports_of_the_package(source):
    """The imports in `source` that take a name from hubexport.export itself."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name == "hubexport.export")
        elif isinstance(node, ast.ImportFrom) and (
                (node.level == 0 and node.module == "hubexport.export")
                or (node.level and not node.module)
                or (node.level == 0 and node.module == "hubexport"
                    and any(a.name == "export" for a in node.names))):
            yield f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import"


@pytest.mark.notf
def test_the_steps_of_an_export_never_import_the_package():
    """export() calls its steps through the package's names (what a test
    replaces); a step importing one of those would depend on import order."""
    assert list(_imports_of_the_package("from hubexport.export import verify")) != []
    directory = os.path.dirname(export.__file__)
    steps = sorted(n for n in os.listdir(directory) if n.endswith(".py") and n != "__init__.py")
    assert "write.py" in steps
    for name in steps:
        with open(os.path.join(directory, name)) as f:
            assert list(_imports_of_the_package(f.read())) == [], name
