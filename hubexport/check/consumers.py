"""The checks of the consumers that fine-tune (K1, K2): hub.KerasLayer in tf_keras,
then Keras 3's TFSMLayer (with obj.serve and obj.serve_training) and
hubexport.keras.ReusableLayer.

TF Serving (K3) is checked in serving.py.
"""

import warnings

import numpy as np
import tensorflow as tf

from hubexport import contract
from hubexport.check.context import Skip, Unavailable, check, error, info
from hubexport.check.parts import count, loss_problem, restored_function, variable_names
from hubexport.contract import (REPEAT_CALL_TOLERANCE, SERVE, SERVE_TRAINING,
                                SERVE_VS_CALL_TOLERANCE)
from hubexport.errors import summarize
FINE_TUNING_LEARNING_RATE = 0.5  # High, so one step moves every weight.


def _import_hub():
    """tensorflow_hub and tf_keras (hub.KerasLayer is a tf_keras layer)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow_hub as hub
            import tf_keras
    except Exception as e:
        raise Unavailable(
            f"tensorflow_hub cannot be imported: {type(e).__name__}: {summarize(e)} "
            "(tensorflow_hub 0.16 needs tf_keras and setuptools<82)"
        ) from None
    return hub, tf_keras


def _compile(keras_module, model, optimizer=None):
    """SGD with a high learning rate (or `optimizer`), so one step moves every weight.

    The fit steps run eagerly (the restored functions still run as graphs).
    Eagerly, TF builds the gradient of a restored function once per loaded
    function and reuses it, so fine-tuning through hub.KerasLayer and
    TFSMLayer reuses what training_gradients built. A graph-mode tf_keras fit
    of a restored model also leaked about twice the model's weights per
    check (measured on ConvNeXtBase), which ran a 40-model catalog process
    out of 24 GiB.
    """
    model.compile(
        optimizer=optimizer or keras_module.optimizers.SGD(FINE_TUNING_LEARNING_RATE),
        loss="mse",
        run_eagerly=True,
    )


def _fit_one_batch(model, images):
    """One training step on random targets."""
    targets = np.random.default_rng(1).normal(size=(len(images), 2)).astype(np.float32)
    model.fit(images, targets, batch_size=len(images), epochs=1, verbose=0)


def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _moved(variables, before):
    return [v for v, old in zip(variables, before) if not np.array_equal(v.numpy(), old)]


def _hub_model(hub, tf_keras, obj, hw, trainable):
    layer = hub.KerasLayer(obj, trainable=trainable)
    model_class = tf_keras.Sequential if trainable else _head_only_class(tf_keras)
    model = model_class([
        tf_keras.layers.InputLayer(input_shape=(*hw, 3)),
        layer,
        tf_keras.layers.Dense(2),
    ])
    _compile(tf_keras, model)
    return layer, model


def _head_only_class(tf_keras):
    """A Sequential whose fit step differentiates only model.trainable_variables.

    The stock step does the same, but its tape also watches the frozen
    backbone's variables (restored tf.Variables stay trainable), so an eager
    step builds the gradient of the training=False trace that no weight needs:
    most of hub_frozen's time. Which variables the step may change is the same.
    """

    class HeadOnly(tf_keras.Sequential):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(self.trainable_variables)
                loss = self.compute_loss(x, y, self(x, training=True))
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
            return {"loss": loss}

    return HeadOnly


@check("K1", fine_tuning=True)
def hub_fine_tuning(ctx):
    """hub.KerasLayer(trainable=True) in tf_keras: one fit step moves the backbone.

    Batch-norm statistics are recognized by name ("moving_mean",
    "moving_variance"); when the model has any, one of them must move.
    """
    hub, tf_keras = _import_hub()
    ctx.require_training_call()
    losses = getattr(ctx.model(), "regularization_losses", [])
    if any(loss_problem(loss) for loss in losses):
        raise Skip("hub.KerasLayer would add the broken regularization losses to the "
                   "fit loss (see regularization_losses)")
    images = ctx.gradient_images()
    with ctx.restoring_variables() as moved:  # hub.KerasLayer holds the model's variables.
        layer, model = _hub_model(hub, tf_keras, ctx.model(), ctx.call_hw(), True)
        trainable, frozen = list(layer.trainable_weights), list(layer.non_trainable_weights)
        _fit_one_batch(model, images)
    if not trainable:
        yield error(
            "the hub.KerasLayer has no trainable weights, so fine-tuning changes nothing",
            "list the trainable variables in root.trainable_variables",
        )
    elif not any(id(v) in moved for v in trainable):
        yield error(
            f"one fit step moved none of the {len(trainable)} trainable weights of "
            "the backbone",
            "make sure gradients reach obj.trainable_variables with training=True",
        )
    statistics = [v for v in frozen if "moving" in v.name]
    if statistics and not any(id(v) in moved for v in statistics):
        yield error(
            f"one fit step did not update any of the {len(statistics)} batch-norm "
            "statistics",
            "call the model with training=True in the training trace, so batch "
            "norm uses and updates batch statistics",
        )
    yield info(
        f"one fit step moved {sum(id(v) in moved for v in trainable)} of "
        f"{len(trainable)} trainable and {sum(id(v) in moved for v in frozen)} of "
        f"{len(frozen)} non-trainable backbone weights"
    )


@check("K1")
def hub_frozen(ctx):
    """hub.KerasLayer(trainable=False) promises a fixed backbone while a head trains."""
    hub, tf_keras = _import_hub()
    images = ctx.images()
    with ctx.restoring_variables() as changed:  # hub.KerasLayer holds the model's variables.
        layer, model = _hub_model(hub, tf_keras, ctx.model(), ctx.call_hw(), False)
        _fit_one_batch(model, images)
    moved = [v for v in layer.weights if id(v) in changed]
    if moved:
        yield error(
            f"with trainable=False, one fit step changed "
            f"{count(len(moved), 'backbone variable')}: {variable_names(moved)}",
            "the training=False call must not update variables (e.g. batch-norm "
            "statistics or counters)",
        )


@check("K2", fine_tuning=True)
def tfsm_layer(ctx):
    """Keras 3 users load the model with TFSMLayer, then predict and fine-tune.

    TFSMLayer is fitted with plain SGD: it names its Keras variables after
    the restored tf.Variables, whose names always end in ":0", and in a
    default (graph-mode) fit Keras 3 optimizers with slot variables (Adam,
    AdamW, RMSprop, SGD with momentum) fail to name their slots
    ("'conv_kernel:0_momentum' is not a valid scope name"), whatever the
    SavedModel. This eager fit would not fail, so it would prove nothing
    about Adam; the stateful optimizer's step runs through
    hubexport.keras.ReusableLayer, the layer that works in any fit.
    """
    obj = ctx.model()
    missing = [f"obj.{name}" for name in (SERVE, SERVE_TRAINING)
               if restored_function(obj, name) is None]
    if missing:
        yield error(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, "
            "so keras.layers.TFSMLayer(path, call_endpoint='serve', "
            "call_training_endpoint='serve_training') fails",
            "add root.serve and root.serve_training: tf.functions taking one images "
            "tensor that call __call__ with training=False and True",
        )
        return
    serve = restored_function(obj, SERVE)
    spec = serve.concrete_functions[0].structured_input_signature[0][0]
    images = ctx.gradient_images(hw=ctx.hw_for(spec, "obj.serve", "tfsm_layer"))
    with ctx.restoring_variables():
        yield from _tfsm_fine_tuning(ctx, images)
    yield from _reusable_layer(ctx)


def _tfsm_layer(ctx):
    """keras.layers.TFSMLayer(path, ...), on the model the other checks loaded.

    TFSMLayer takes a path and calls tf.saved_model.load(path) itself; it is
    handed the loaded object instead, so the model is loaded once and the
    gradients TF built for the earlier checks are reused (half of this
    check's time for a large model).
    """
    import keras

    loaded = ctx.model()
    load = tf.saved_model.load
    tf.saved_model.load = lambda path, *args, **kwargs: (
        loaded if path == ctx.path else load(path, *args, **kwargs))
    try:
        return keras.layers.TFSMLayer(
            ctx.path, call_endpoint=SERVE, call_training_endpoint=SERVE_TRAINING
        )
    finally:
        tf.saved_model.load = load


def _tfsm_fine_tuning(ctx, images):
    import keras

    layer = _tfsm_layer(ctx)
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    _compile(keras, model)
    predictions = model.predict(images, verbose=0)
    if predictions.shape != (len(images), 2):
        yield error(f"a Dense(2) head on TFSMLayer predicts shape {predictions.shape}")
        return
    trainable = list(layer.trainable_weights)
    if not trainable:
        yield error(
            "TFSMLayer finds no trainable weights in serve and serve_training",
            "create the model's weights with trainable=True",
        )
        return
    before = _snapshot(trainable)
    _fit_one_batch(model, images)
    if not _moved(trainable, before):
        yield error(
            f"one fit step moved none of the {len(trainable)} trainable weights of "
            "the TFSMLayer",
            "make sure gradients reach the variables through serve_training",
        )


def _endpoint_hw(ctx, name):
    """The (height, width) to call obj.<name> (one images tensor) with."""
    spec = getattr(ctx.model(), name).concrete_functions[0].structured_input_signature[0][0]
    return ctx.hw_for(spec, f"obj.{name}", "tfsm_layer")


@check("K2")
def serve_endpoint(ctx):
    """TFSMLayer predicts with obj.serve: it must be obj(images, training=False)."""
    serve = restored_function(ctx.model(), SERVE)
    if serve is None:
        raise Skip("obj.serve is missing (see tfsm_layer)")
    if not ctx.determinism_difference() <= REPEAT_CALL_TOLERANCE:
        raise Skip("identical calls of __call__ already differ (see deterministic)")
    expected = ctx.reference_output()
    images = ctx.images(hw=_endpoint_hw(ctx, SERVE))
    if images.shape != ctx.images().shape:
        expected = ctx.infer(images)
    actual = np.asarray(serve(tf.constant(images)))
    hint = "make serve call __call__(images, training=False)"
    if actual.shape != expected.shape:
        yield error(f"obj.serve(images) has shape {actual.shape}; obj(images) has "
                    f"{expected.shape}", hint)
        return
    difference = contract.relative_difference(actual, expected)
    if not difference <= SERVE_VS_CALL_TOLERANCE:
        yield error(
            f"obj.serve(images) differs from obj(images, training=False) by "
            f"{difference:.2e} (relative), more than {SERVE_VS_CALL_TOLERANCE:.0e}", hint)


@check("K2", fine_tuning=True)
def serve_training_mode(ctx):
    """TFSMLayer fine-tunes with obj.serve_training: it must run training mode (C2).

    Observed through the batch-norm statistics it uses (variables named
    "moving"): a training call updates them, an inference call never does.
    Its outputs would also differ from serve's, but so they do for dropout
    or noise, and by how much needs a tolerance; an update needs none. A
    model without batch norm shows no difference to observe. The call runs
    under a tape, as TFSMLayer's fit runs it, so tfsm_layer reuses what
    TensorFlow prepares here.
    """
    serve_training = restored_function(ctx.model(), SERVE_TRAINING)
    if serve_training is None:
        raise Skip("obj.serve_training is missing (see tfsm_layer)")
    statistics = list({  # Each variable once (they do not hash by value).
        id(v): v for concrete in serve_training.concrete_functions for v in concrete.variables
        if "moving" in v.name}.values())
    if not statistics:
        yield info("no batch-norm statistics (variables named 'moving'): training "
                   "mode is not observable")
        return
    images = ctx.gradient_images(hw=_endpoint_hw(ctx, SERVE_TRAINING))
    with ctx.restoring_variables() as changed:  # serve_training's are the model's variables.
        with tf.GradientTape():
            serve_training(tf.constant(images))
    moved = [v for v in statistics if id(v) in changed]
    if not moved:
        yield error(
            f"obj.serve_training(images) updated none of the {len(statistics)} "
            "batch-norm statistics it uses, so it runs inference mode",
            "make serve_training call __call__(images, training=True)")


def _reusable_layer(ctx):
    """hubexport.keras.ReusableLayer fine-tunes in Keras 3 with Adam.

    What a broken training call or loss breaks is another check's error;
    here it is an info line. So are the batch-norm statistics: that
    __call__(training=True) updates them in a fit is hub_fine_tuning's
    error, that serve_training does, serve_training_mode's.
    """
    obj = ctx.model()
    try:
        ctx.require_training_call()
        if any(loss_problem(loss) for loss in getattr(obj, "regularization_losses", [])):
            raise Skip("the regularization losses are broken (see regularization_losses)")
    except Skip as skip:
        yield info(f"ReusableLayer with Adam not tried: {skip}")
        return
    with ctx.restoring_variables():
        yield from _reusable_fine_tuning(ctx, ctx.gradient_images())


def _reusable_fine_tuning(ctx, images):
    import keras

    from hubexport.keras import ReusableLayer

    layer = ReusableLayer(ctx.model(), trainable=True)
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    _compile(keras, model, keras.optimizers.Adam(FINE_TUNING_LEARNING_RATE))
    trainable, frozen = list(layer.trainable_weights), list(layer.non_trainable_weights)
    before = _snapshot(trainable + frozen)
    _fit_one_batch(model, images)
    moved = {id(v) for v in _moved(trainable + frozen, before)}
    if trainable and not any(id(v) in moved for v in trainable):
        yield error(
            f"one Adam fit step through ReusableLayer moved none of the "
            f"{len(trainable)} trainable weights of the backbone",
            "list the trainable variables in obj.trainable_variables, and let "
            "gradients reach them with training=True")
        return
    yield info(
        f"one {type(model.optimizer).__name__} fit step moved "
        f"{sum(id(v) in moved for v in trainable)} of "
        f"{len(trainable)} trainable and {sum(id(v) in moved for v in frozen)} of "
        f"{len(frozen)} non-trainable backbone weights")
