"""Keras 3 fine-tuning of a hubexport backbone (HUB_CONTRACT K2, issue 17 item 2).

hubexport.keras.ReusableLayer fine-tunes with every Keras 3 optimizer.
keras.layers.TFSMLayer, in a default (graph-mode) fit, only with the ones
without slot variables, whatever the SavedModel (pinned below, with Keras'
own model.export() artifact); built eagerly, the slots work.
"""

import numpy as np
import pytest
import tensorflow as tf

from conftest import FV_SIZE
from hubexport import check, reusable
from hubexport.check import consumers
from hubexport.keras import ReusableLayer, keras_name

import mutants

SIZE = 16
SCOPE_ERROR = "is not a valid scope name"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keras3") / "good")
    mutants.good(path)
    return path


@pytest.fixture(scope="module")
def with_extras(keras, tmp_path_factory):
    """A backbone with a regularized kernel and a batch_norm_momentum keyword (0.99)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, kernel_regularizer=keras.regularizers.L2(0.5))(inputs)
    x = keras.layers.BatchNormalization(momentum=0.99)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    extras = reusable.Extras(serving_size=(SIZE, SIZE), batch_norm_momentum=0.99)
    root, signatures, _ = reusable.make_root(model, "unit", "feature_vector", extras=extras)
    path = str(tmp_path_factory.mktemp("keras3") / "extras")
    tf.saved_model.save(root, path, signatures=signatures)
    return path


def _images(batch=4, size=SIZE):
    return np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype("float32")


def _classifier(keras, layer, size=SIZE):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))


def _fit(model, images, optimizer, run_eagerly=False):
    model.compile(optimizer, "mse", run_eagerly=run_eagerly)
    targets = np.random.default_rng(1).normal(size=(len(images), 2)).astype("float32")
    model.fit(images, targets, batch_size=len(images), epochs=1, verbose=0)


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _moved(variables, before):
    return [not np.array_equal(v.numpy(), b) for v, b in zip(variables, before)]


def _statistics(obj):
    return [v for v in obj.variables if "moving" in v.name]


OPTIMIZERS = {
    "Adam": lambda keras: keras.optimizers.Adam(0.1),
    "AdamW": lambda keras: keras.optimizers.AdamW(0.1),
    "RMSprop": lambda keras: keras.optimizers.RMSprop(0.1),
    "SGD_momentum": lambda keras: keras.optimizers.SGD(0.1, momentum=0.9),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_fine_tunes_with_every_optimizer(keras, good, optimizer):
    """The restored variables themselves move (wrapped, not copied), statistics too."""
    obj = tf.saved_model.load(good)
    layer = ReusableLayer(obj, trainable=True)
    assert {id(w.value) for w in layer.trainable_weights} == {
        id(v) for v in obj.trainable_variables}
    assert {id(w.value) for w in layer.non_trainable_weights} == {
        id(v) for v in _statistics(obj)}
    before, statistics = _values(obj.trainable_variables), _values(_statistics(obj))
    _fit(_classifier(keras, layer), _images(), OPTIMIZERS[optimizer](keras))
    assert all(_moved(obj.trainable_variables, before))
    assert all(_moved(_statistics(obj), statistics))


@pytest.mark.slow
def test_real_export_fine_tunes_with_adam(keras, mobilenet_fv):
    """MobileNetV2 (run eagerly: a graph-mode fit first builds the restored
    model's gradient graph again, tens of seconds on 2 cores)."""
    layer = ReusableLayer(mobilenet_fv)
    trainable, statistics = layer.trainable_weights, layer.non_trainable_weights
    assert trainable and statistics and all("moving" in w.name for w in statistics)
    before = _values(trainable + statistics)
    _fit(_classifier(keras, layer, FV_SIZE), _images(2, FV_SIZE),
         keras.optimizers.Adam(1e-3), run_eagerly=True)
    moved = _moved(trainable + statistics, before)
    assert np.mean(moved[:len(trainable)]) > 0.9 and all(moved[len(trainable):])


def test_frozen_moves_nothing_in_the_backbone(keras, good):
    obj = tf.saved_model.load(good)
    layer = ReusableLayer(obj, trainable=False)
    model = _classifier(keras, layer)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 8
    before, head = _values(obj.variables), _values(model.layers[-1].weights)
    _fit(model, _images(), keras.optimizers.Adam(0.1))
    assert not any(_moved(obj.variables, before))
    assert all(_moved(model.layers[-1].weights, head))


def test_training_is_forwarded(good):
    obj = tf.saved_model.load(good)
    layer = ReusableLayer(obj)
    before = _values(_statistics(obj))
    layer(_images())
    layer(_images(), training=False)
    assert not any(_moved(_statistics(obj), before))
    layer(_images(), training=True)
    assert all(_moved(_statistics(obj), before))


@pytest.mark.parametrize("trainable", [True, False])
def test_regularization_losses_join_the_loss(keras, with_extras, trainable):
    obj = tf.saved_model.load(with_extras)
    (regularization,) = [float(loss()) for loss in obj.regularization_losses]
    assert regularization > 0
    model = _classifier(keras, ReusableLayer(obj, trainable=trainable))
    model.compile("adam", "mse")
    images, targets = _images(), np.zeros((4, 2), "float32")
    model(images)
    assert [float(loss) for loss in model.losses] == ([regularization] if trainable else [])
    mse = float(np.mean(np.square(model.predict(images, verbose=0))))
    expected = mse + (regularization if trainable else 0.0)
    assert model.evaluate(images, targets, verbose=0) == pytest.approx(expected, rel=1e-5)


def _moving_mean_step(path, arguments):
    obj = tf.saved_model.load(path)
    (moving_mean,) = [v for v in obj.variables if "moving_mean" in v.name]
    before = moving_mean.numpy().copy()
    ReusableLayer(obj, arguments=arguments)(_images(), training=True)
    return moving_mean.numpy() - before


def test_arguments_reach_the_call(with_extras):
    """batch_norm_momentum m moves the moving mean by (1 - m) of its distance."""
    default = _moving_mean_step(with_extras, None)
    half = _moving_mean_step(with_extras, dict(batch_norm_momentum=0.5))
    assert np.all(default != 0)
    np.testing.assert_allclose(half, default * (0.5 / 0.01), rtol=1e-3)


def test_call_without_training_argument(tmp_path):
    """A root whose __call__ takes only images (hub.KerasLayer accepts it too)."""
    model = mutants.tiny_model()
    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = tf.function(lambda images: mutants._forward(model, images, False),
                                input_signature=[mutants.IMAGES], autograph=False)
    root.variables, root.trainable_variables = mutants._variables(model), []
    tf.saved_model.save(root, str(tmp_path))
    layer = ReusableLayer(str(tmp_path))
    assert layer(_images(), training=True).shape == (4, mutants.FEATURES)


def test_keras_names():
    assert keras_name("conv/kernel:0") == "conv_kernel"
    assert keras_name("a:b/c") == "a_b_c"


# Why ReusableLayer exists: TFSMLayer cannot fine-tune with a stateful optimizer.


def _tfsm(keras, path, endpoint="serve", training_endpoint="serve_training"):
    return keras.layers.TFSMLayer(path, call_endpoint=endpoint,
                                  call_training_endpoint=training_endpoint)


def test_restored_variable_names_end_in_colon_0(good):
    """TensorFlow names every eager variable "<name>:0"; no SavedModel can avoid it."""
    assert all(v.name.endswith(":0") for v in tf.saved_model.load(good).variables)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_tfsm_layer_fails_with_slot_optimizers(keras, good, optimizer):
    with pytest.raises(ValueError, match=SCOPE_ERROR):
        _fit(_classifier(keras, _tfsm(keras, good)), _images(), OPTIMIZERS[optimizer](keras))


def test_tfsm_layer_fails_on_keras_own_export(keras, tmp_path):
    """Keras' model.export() artifact fails the same way: it is Keras, not hubexport."""
    mutants.tiny_model().export(str(tmp_path), verbose=False)
    model = _classifier(keras, _tfsm(keras, str(tmp_path), training_endpoint=None))
    with pytest.raises(ValueError, match=SCOPE_ERROR):
        _fit(model, _images(), keras.optimizers.Adam(0.1))


@pytest.mark.parametrize("build", ["run_eagerly", "optimizer.build"])
def test_tfsm_layer_fine_tunes_with_adam_built_eagerly(keras, good, build):
    """The name is refused only as a graph scope: Keras builds the optimizer in
    the first traced step unless the fit runs eagerly or it was built before."""
    layer = _tfsm(keras, good)
    model = _classifier(keras, layer)
    model.compile(keras.optimizers.Adam(0.1), "mse", run_eagerly=build == "run_eagerly")
    if build == "optimizer.build":
        model.optimizer.build(model.trainable_variables)
    before = _values(layer.trainable_weights)
    model.fit(_images(), np.ones((4, 2), "float32"), verbose=0)
    assert all(_moved(layer.trainable_weights, before))


def test_tfsm_layer_fine_tunes_with_plain_sgd(keras, good):
    layer = _tfsm(keras, good)
    before = _values(layer.trainable_weights)
    _fit(_classifier(keras, layer), _images(), keras.optimizers.SGD(0.1))
    assert all(_moved(layer.trainable_weights, before))


# The K2 check's Adam step.


def test_check_fine_tunes_with_adam(good):
    findings = list(consumers._reusable_layer(check.Context(good, "auto", False)))
    assert [f.message for f in findings] == [
        "one Adam fit step moved 6 of 6 trainable and 2 of 2 non-trainable backbone weights"]


def test_check_reports_a_backbone_adam_does_not_move(tmp_path):
    """obj.trainable_variables names a variable no call uses."""
    model = mutants.tiny_model()
    root, signatures = mutants._root(model, mutants._plain_call(model))
    root.unused = tf.Variable(1.0, name="unused")
    root.variables, root.trainable_variables = root.variables + [root.unused], [root.unused]
    mutants._save(str(tmp_path), (root, signatures))
    findings = list(consumers._reusable_layer(check.Context(str(tmp_path), "auto", False)))
    assert [f.level for f in findings] == ["error"]
    assert "one Adam fit step through ReusableLayer moved none of the 1" in findings[0].message


# What the model card inside every export shows.


def _card_keras3_example():
    from hubexport.publish import model_card

    card = model_card.render({"task": "feature_vector", "architecture": "MobileNetV2",
                              "image_size": SIZE, "batch_norm_momentum": 0.99})
    start = card.index("```python\nimport keras\n")
    return card[start + len("```python\n"):card.index("```", start + 3)]


def test_model_card_keras3_example_fine_tunes_with_adam(good):
    code = _card_keras3_example().replace("trainable=False", "trainable=True")
    assert "ReusableLayer(PATH" in code and "keras.optimizers.Adam(" in code
    scope = {"PATH": good, "NUM_CLASSES": 3}
    exec(code, scope)
    backbone = scope["backbone"]
    before = _values(backbone.weights)
    scope["model"].fit(_images(), np.arange(4) % 3, verbose=0)
    assert all(_moved(backbone.weights, before))
