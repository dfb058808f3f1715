"""--jit_compile: the inference path compiled with XLA, training left alone."""

import os

import numpy as np
import pytest

from conftest import FV_SIZE, fit_through_hub
from hubexport import config as config_lib
from hubexport import export
from hubexport.export import verification
from hubexport.errors import UserError

XLA = "_XlaMustCompile"
_JIT_LOG = []  # What the export of mobilenet_jit said.


@pytest.fixture(scope="module")
def mobilenet_jit(mobilenet_weights, tmp_path_factory):
    """The export of conftest's mobilenet_fv (same weights), with --jit_compile."""
    plan = export.plan("MobileNetV2", "feature_vector", FV_SIZE, mobilenet_weights,
                       jit_compile=True)
    path = str(tmp_path_factory.mktemp("exports") / "mobilenet_v2_fv_jit")
    export.export(plan, path, log=_JIT_LOG.append)
    return path


def _library(path):
    """{name: FunctionDef} of the SavedModel's function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {fn.signature.name: fn for fn in saved.meta_graphs[0].graph_def.library.function}


def _callees(function, library):
    """Names of the library functions that `function`'s nodes call."""
    names = set()
    for node in function.node_def:
        if node.op in library:
            names.add(node.op)
        for value in node.attr.values():
            if value.func.name in library:
                names.add(value.func.name)
    return names


def _reachable(roots, library):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_callees(library[name], library))
    return seen


def _backbones(library):
    """(inference, training) traces of the model: the two functions of most
    nodes apart from save/restore; the training one updates batch norm."""
    model = sorted((fn for name, fn in library.items() if "_traced_" not in name),
                   key=lambda fn: len(fn.node_def))[-2:]
    updates = [any(n.op.startswith("Assign") for n in fn.node_def) for fn in model]
    assert sorted(updates) == [False, True]
    inference, training = sorted(model, key=lambda fn: updates[model.index(fn)])
    return inference.signature.name, training.signature.name


def test_saved_graph_compiles_the_inference_trace_only(mobilenet_jit, mobilenet_fv):
    library = _library(mobilenet_jit)
    compiled = [name for name, fn in library.items() if fn.attr[XLA].b]
    assert compiled, "no function of the jit export is marked for XLA"
    inference, training = _backbones(library)
    under_xla = _reachable(compiled, library)
    assert inference in under_xla
    assert training not in under_xla
    # The compiled wrapper stores no copy of the model: still one graph per
    # value of training, one function more than without XLA.
    plain = _library(mobilenet_fv)
    assert not any(fn.attr[XLA].b for fn in plain.values())
    assert len(library) == len(plain) + 1


def test_jit_export_computes_what_the_plain_export_computes(mobilenet_jit, mobilenet_fv):
    import tensorflow as tf

    jit, plain = tf.saved_model.load(mobilenet_jit), tf.saved_model.load(mobilenet_fv)
    images = tf.constant(np.random.default_rng(3).uniform(
        0, 1, (3, FV_SIZE, FV_SIZE, 3)).astype("float32"))
    expected = plain(images).numpy()
    for actual in (jit(images), jit.serve(images),
                   jit.signatures["serving_default"](images=images)["feature_vector"]):
        actual = np.asarray(actual)
        assert export.relative_difference(actual, expected) <= export.TOLERANCE
    # Training is the same uncompiled graph: bit for bit.
    np.testing.assert_array_equal(jit(images, training=True).numpy(),
                                  plain(images, training=True).numpy())


@pytest.mark.slow
def test_jit_export_fine_tunes_through_hub_keras_layer(mobilenet_jit):
    layer, model, images, before, _ = fit_through_hub(mobilenet_jit, trainable=True)
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert np.mean(moved) > 0.9, "the backbone's weights must move"
    assert model.predict(images, verbose=0).shape == (8, 3)  # Inference: compiled.


@pytest.mark.slow
def test_jit_export_passes_the_check_and_says_so(mobilenet_jit):
    from hubexport import checker

    report = checker.check(mobilenet_jit)
    assert report.verdict() == "CONFORMS", [
        f.message for f in report.findings if f.level == "error"]
    assert export.read_provenance(mobilenet_jit)["jit_compile"] is True
    with open(os.path.join(mobilenet_jit, "assets.extra", "model_card.md")) as f:
        assert "Compiled with XLA" in f.read()


def test_jit_export_of_a_depthwise_model_warns_that_xla_may_slow_it(mobilenet_jit):
    warnings = [m for m in _JIT_LOG if m.startswith("Warning: --jit_compile")]
    assert len(warnings) == 1, _JIT_LOG
    assert "depthwise convolution layers" in warnings[0]
    assert "benchmarks/compare.py --jit_compile" in warnings[0]


@pytest.mark.parametrize("layer,warns", [("DepthwiseConv2D", True),
                                         ("SeparableConv2D", True), ("Conv2D", False)])
def test_only_depthwise_layers_draw_the_xla_warning(layer, warns):
    import keras

    kwargs = {"kernel_size": 3} if layer == "DepthwiseConv2D" else {"filters": 4, "kernel_size": 3}
    inner = keras.Sequential([keras.Input((8, 8, 3)), getattr(keras.layers, layer)(**kwargs)])
    model = keras.Sequential([keras.Input((8, 8, 3)), inner])  # Nested, as backbones are.
    messages = []
    export._warn_of_depthwise_under_xla(model, messages.append)
    assert bool(messages) == warns, messages
    if warns:
        assert "with 1 depthwise convolution layer:" in messages[0]


def test_jit_compile_from_config_and_flag(tmp_path, monkeypatch):
    from absl import flags
    from absl.testing import flagsaver

    from hubexport import cli

    config = tmp_path / "m.toml"
    config.write_text('architecture = "MobileNetV2"\ntask = "feature_vector"\n'
                      'jit_compile = true\n')
    assert config_lib.load(str(config))["jit_compile"] is True
    config.write_text('architecture = "MobileNetV2"\ntask = "feature_vector"\n'
                      'jit_compile = "yes"\n')
    with pytest.raises(UserError, match="jit_compile must be a bool; received 'yes'"):
        config_lib.load(str(config))
    with pytest.raises(UserError, match="jit_compile must be true or false"):
        export.plan("MobileNetV2", "feature_vector", 32, "none", jit_compile="yes")
    assert not export.plan("MobileNetV2", "feature_vector", 32, "none").jit_compile

    plans = []
    monkeypatch.setattr(export, "export", lambda plan, *a, **k: plans.append(plan) or
                        export.Result("out", 0.0, 0.0))
    for extra in ([], ["--jit_compile"]):
        with flagsaver.flagsaver():
            argv = flags.FLAGS(["hubexport", "export", "--architecture=MobileNetV2",
                                "--task=feature_vector", "--weights=none",
                                "--output=out", *extra])
            assert cli.main(argv) == 0
    assert [plan.jit_compile for plan in plans] == [False, True]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_model_is_traced_once_per_value_of_training(keras, jit_compile):
    """Every endpoint, the momentum variants, the compiled wrapper and the
    verification's reference share two traces of the model."""
    import tensorflow as tf

    from hubexport import reusable

    traced = []

    class Counting(keras.layers.Layer):
        def call(self, inputs, training=None):
            traced.append(training)
            return inputs

    keras.backend.clear_session()
    model = keras.Sequential([
        keras.Input((None, None, 3)), Counting(), keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(momentum=0.9), keras.layers.GlobalAveragePooling2D()])
    traced.clear()  # Keras ran the layer symbolically to build the model.
    extras = reusable.Extras(serving_size=(8, 8), batch_norm_momentum=0.9)
    _, _, reference = reusable.make_root(model, "unit", "feature_vector", extras=extras,
                                         jit_compile=jit_compile)
    reference(tf.zeros([1, 8, 8, 3]))
    assert sorted(traced) == [False, True]


def test_a_jit_export_that_differs_says_xla_may_be_why(tmp_path, monkeypatch):
    monkeypatch.setattr(verification, "relative_difference", lambda actual, expected: 0.5)
    plan = export.plan("MobileNetV2", "feature_vector", 32, "none", jit_compile=True)
    with pytest.raises(export.VerificationError, match="5.00e-01 .*export without --jit_compile"):
        export.export(plan, str(tmp_path / "model"))
    assert os.listdir(tmp_path) == []
