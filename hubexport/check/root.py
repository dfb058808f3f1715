"""The checks of the root object (R1-R4): what tf.saved_model.load returns,
its variables, trainable variables and regularization losses."""

import collections.abc

import tensorflow as tf

from hubexport.check.context import Skip, check, error, info, warning
from hubexport.check.parts import (count, listed_variables, loss_problem,
                                   restored_function, variable_names)
from hubexport.contract import CALL
from hubexport.errors import summarize


@check("R1")
def loads(ctx):
    """Every clause below is about the object that tf.saved_model.load returns."""
    try:
        ctx.load()
    except Exception as e:
        yield error(
            f"tf.saved_model.load failed: {type(e).__name__}: {summarize(e)}",
            "export the model again; check that variables/ is complete",
        )


@check("R1")
def restored_call(ctx):
    """hub.KerasLayer and direct callers need obj(images) to be a tf.function."""
    obj = ctx.model()
    fn = getattr(obj, CALL, None)
    if restored_function(obj, CALL) is not None:
        return
    signatures = sorted(getattr(obj, "signatures", {}))
    what = "missing" if fn is None else f"a {type(fn).__name__}, not a restored tf.function"
    yield error(
        f"obj.__call__ is {what} (the model has the signatures {signatures})",
        "save a root object whose __call__ is a tf.function traced for "
        "training=False and True (see hubexport.reusable.make_root); a Keras model "
        "saved with tf.saved_model.save or model.export() has none",
    )


@check("R2")
def variables(ctx):
    """Consumers track obj.variables; a variable missing there is not saved with them."""
    obj = ctx.model()
    listed, problem = listed_variables(obj, "variables")
    if problem:
        yield error(problem, "set root.variables to the list of every variable")
        return
    listed_ids = {id(v) for v in listed}
    missing = collections.defaultdict(list)
    for endpoint, variable in ctx.used_variables():
        if id(variable) not in listed_ids:
            missing[endpoint].append(variable)
    for endpoint, unlisted in missing.items():
        yield error(
            f"{endpoint} uses {count(len(unlisted), 'variable')} missing from "
            "obj.variables: "
            f"{variable_names(unlisted)}",
            "list every variable that any traced call captures in root.variables",
        )


@check("R3")
def trainable_variables(ctx):
    """Fine-tuning changes exactly these: they must be variables, and trainable."""
    obj = ctx.model()
    trainable, problem = listed_variables(obj, "trainable_variables")
    if problem:
        yield error(problem, "set root.trainable_variables (a list, possibly empty)")
        return
    listed, _ = listed_variables(obj, "variables")
    if listed is not None:
        listed_ids = {id(v) for v in listed}
        outside = [v for v in trainable if id(v) not in listed_ids]
        if outside:
            yield error(
                f"{count(len(outside), 'trainable variable')} not in obj.variables: "
                f"{variable_names(outside)}",
                "obj.trainable_variables must be a subset of obj.variables",
            )
    frozen = [v for v in trainable if not v.trainable]
    if frozen:
        yield error(
            f"{count(len(frozen), 'variable')} in obj.trainable_variables with "
            f"trainable=False: {variable_names(frozen)}",
            "leave non-trainable variables (e.g. batch-norm statistics) out of "
            "trainable_variables",
        )
    if not trainable:
        yield info("obj.trainable_variables is empty: fine-tuning changes nothing")


@check("R4")
def regularization_losses(ctx):
    """hub.KerasLayer adds each loss to the fine-tuning objective by calling it."""
    obj = ctx.model()
    hint = "set root.regularization_losses to a list of zero-argument tf.functions"
    if not hasattr(obj, "regularization_losses"):
        yield error("obj.regularization_losses is missing (use [] if there are none)", hint)
        return
    losses = obj.regularization_losses
    if not isinstance(losses, collections.abc.Sequence) or isinstance(losses, str):
        yield error(
            f"obj.regularization_losses is a {type(losses).__name__}, not a list", hint
        )
        return
    for index, loss in enumerate(losses):
        problem = loss_problem(loss)
        if problem:
            yield error(f"obj.regularization_losses[{index}] {problem}", hint)


# Run with the fine-tuning checks, after C5 (see hubexport.check.ORDER).


@check("R3", fine_tuning=True)
def training_gradients(ctx):
    """Fine-tuning moves obj.trainable_variables only if gradients reach them."""
    ctx.require_training_call()
    trainable, problem = listed_variables(ctx.model(), "trainable_variables")
    if problem:
        raise Skip(f"{problem} (see trainable_variables)")
    trainable = [v for v in trainable if v.trainable]
    if not trainable:
        raise Skip("obj.trainable_variables is empty (see trainable_variables)")
    images = ctx.gradient_images()
    with ctx.restoring_variables():
        with tf.GradientTape() as tape:
            output = ctx.call(images, training=True)
            weights = tf.random.stateless_uniform(tf.shape(output), seed=(0, 0))
            loss = tf.reduce_sum(tf.cast(output, tf.float32) * weights)
        gradients = tape.gradient(loss, trainable)
    missing = [v for v, g in zip(trainable, gradients) if g is None]
    message = (
        f"no gradient reaches {len(missing)} of {len(trainable)} trainable variables "
        f"with training=True: {variable_names(missing)}"
    )
    hint = "do not stop gradients (tf.stop_gradient, integer casts) in the training call"
    if 2 * len(missing) > len(trainable):
        yield error(message, hint)
    elif missing:
        yield warning(message, hint)
