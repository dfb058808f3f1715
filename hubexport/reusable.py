"""Wraps a Keras model in the reusable-SavedModel API of HUB_CONTRACT.md.

Keras 3 `model.export()` gives only a `serve` endpoint, and a plain
`tf.saved_model.save(model)` only a signature, so the root object is built by
hand: an AutoTrackable with

  __call__(images, training=False)   traced for training=False and True (R1, C2)
  variables, trainable_variables     lists of tf.Variables (R2, R3)
  regularization_losses              zero-argument tf.functions (R4)
  serve(images), serve_training(images)   for keras.layers.TFSMLayer (K2)

and the `serving_default` signature for TF Serving (K3). With Extras, also
`__call__(..., batch_norm_momentum=default)` (C5), `top_k` and its labels
asset, and the raw-image signatures of hubexport.serving. All endpoints call
the one traced `__call__`, so the graph of the model is stored once per value
of `training`. Each endpoint is a row of hubexport.contract.ENDPOINTS and a
builder here (@builds(kind, name)); make_root refuses a row without a builder
or a builder without a row.

With jit_compile, the inference path (`training=False`, and so every
endpoint but `serve_training`) runs preprocessing and the model as one
XLA-compiled function: a small `tf.function(jit_compile=True)` that calls the
training=False trace, which is itself stored without the attribute so the
export's verification can run it uncompiled as the reference. The
training=True trace is not compiled, so fine-tuning is unchanged.
"""

import contextlib
import dataclasses

import tensorflow as tf

from hubexport import contract
from hubexport import preprocessing as preprocessing_lib


def image_spec(height=None, width=None):
    return tf.TensorSpec([None, height, width, 3], tf.float32, name="images")


def _tf_variable(v):
    """The tf.Variable behind a Keras 3 variable (or `v` itself)."""
    return getattr(v, "value", v) if not isinstance(v, tf.Variable) else v


def _regularization_losses(model):
    """One zero-argument tf.function per regularized weight of `model`."""
    return [
        _loss_function(weight.regularizer, _tf_variable(weight))
        for weight in model.trainable_weights
        if getattr(weight, "regularizer", None) is not None
    ]


def _loss_function(regularizer, variable):
    @tf.function(input_signature=[], autograph=False)
    def loss():
        return tf.cast(regularizer(variable), tf.float32)

    loss.get_concrete_function()
    return loss


@dataclasses.dataclass(frozen=True)
class Extras:
    """The optional parts of an export (see hubexport.serving).

    serving_size: (height, width) that raw images are resized to.
    labels, top_k, activation: the top_k signature (classification with labels).
    batch_norm_momentum: the default of __call__'s batch_norm_momentum keyword
      (None: no keyword), which then drives every batch norm layer of the model.
    """

    serving_size: tuple
    labels: tuple | None = None
    top_k: int = 5
    activation: str = "softmax"
    batch_norm_momentum: float | None = None
    labels_path: str | None = None  # A file holding `labels`, saved as an asset.


def make_root(model, preprocessing, task, height=None, width=None, extras=None,
              jit_compile=False):
    """Returns (root, signatures, reference).

    `root` and `signatures` are ready for `tf.saved_model.save`: one
    endpoint per row of contract.ENDPOINTS that the export has, in table
    order, each made by its builder (BUILDERS). `reference(x)` is the
    model's own training=False trace, the one `__call__` calls, on already
    preprocessed input.

    Args:
      model: a built Keras model taking preprocessed images and returning
        [batch, N] (features or logits).
      preprocessing: a mode of hubexport.preprocessing.
      task: "feature_vector" or "classification".
      height, width: the fixed input size, or None where it is free.
      extras: an Extras, or None for the contract's endpoints only.
      jit_compile: compile the inference path with XLA (see the module doc).
    """
    check_builders()
    spec = image_spec(height, width)
    momentum = extras.batch_norm_momentum if extras else None
    backbone, call_fn, traces = _traced_call(model, preprocessing, spec, momentum, jit_compile)
    variables = unique_by_identity([_tf_variable(v) for v in model.variables] + [
        v for trace in traces for v in trace.variables
    ])
    parts = _Parts(model, call_fn, spec, contract.OUTPUT_KEYS[task], extras, variables,
                   tf.__internal__.tracking.AutoTrackable())
    signatures = {}
    for row in contract.endpoints(labels=bool(extras and extras.labels),
                                  raw_images=extras is not None):
        value = BUILDERS[row.kind, row.name](parts)
        if row.kind == contract.SIGNATURE:
            signatures[row.name] = value
        else:
            setattr(parts.root, row.name, value)
    return parts.root, signatures, _reference(backbone, spec, momentum)


def _traced_call(model, preprocessing, spec, momentum, jit_compile):
    """(backbone, __call__'s tf.function, its concrete functions).

    backbone: the model on preprocessed input, traced once per value of
    training (the momentum is a tensor, so every value shares the trace); the
    export's verification calls it directly, as the graph-mode reference.
    """
    batch_norms = batch_norm_layers(model) if momentum is not None else []

    @tf.function(autograph=False)
    def backbone(inputs, training, batch_norm_momentum=None):
        with _momentum_of(batch_norms, batch_norm_momentum):
            return tf.cast(model(inputs, training=training), tf.float32)

    def backbone_call(images, training, *momentum_tensor):
        return backbone(preprocessing_lib.preprocess(images, preprocessing), training,
                        *momentum_tensor)

    # The inference path as one XLA cluster; it calls the (uncompiled) trace
    # of backbone, so the model's graph is still stored once per `training`.
    @tf.function(autograph=False, jit_compile=True)
    def compiled_inference(images, *momentum_tensor):
        return backbone_call(images, False, *momentum_tensor)

    def model_call(images, training, batch_norm_momentum):
        momentum_tensor = () if momentum is None else (
            tf.convert_to_tensor(batch_norm_momentum, tf.float32),)
        if jit_compile and not training:
            return compiled_inference(images, *momentum_tensor)
        return backbone_call(images, training, *momentum_tensor)

    if momentum is None:
        def call(images, training=False):
            return model_call(images, training, None)
    else:
        def call(images, training=False, batch_norm_momentum=momentum):
            return model_call(images, training, batch_norm_momentum)

    call_fn = tf.function(call, autograph=False)
    hyperparameters = [{}]
    if momentum is not None:
        hyperparameters.append({contract.MOMENTUM_KEYWORD: tf.TensorSpec([], tf.float32)})
    traces = [
        call_fn.get_concrete_function(spec, training=training, **hparams)
        for hparams in hyperparameters
        for training in (False, True)
    ]
    return backbone, call_fn, traces


def _reference(backbone, spec, momentum):
    """backbone's training=False trace, at the momentum __call__ defaults to."""
    # The spec of the traces above (a named spec would trace the model again).
    inputs_spec = tf.TensorSpec(spec.shape, spec.dtype)
    if momentum is None:
        return backbone.get_concrete_function(inputs_spec, training=False)
    concrete = backbone.get_concrete_function(
        inputs_spec, training=False, batch_norm_momentum=tf.TensorSpec([], tf.float32))
    return lambda inputs: concrete(inputs, batch_norm_momentum=tf.constant(momentum))


# --- The builders: one per row of contract.ENDPOINTS ------------------------------


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What the builders of one root share."""

    model: object  # The Keras model.
    call: object  # The tf.function of __call__, traced.
    spec: object  # The images tf.TensorSpec.
    output_key: str
    extras: Extras | None
    variables: list  # Every variable of the model and of every trace of call.
    root: object  # The AutoTrackable that make_root fills, in table order.


# (kind, name) of a row of contract.ENDPOINTS -> builder(parts): the value
# make_root sets as root.<name>, or for a signature the concrete function it
# saves under that key.
BUILDERS = {}


def builds(kind, name):
    """Registers the decorated function as the builder of the ENDPOINTS row (kind, name)."""

    def register(function):
        BUILDERS[kind, name] = function
        return function

    return register


def check_builders():
    """Refuses a row of contract.ENDPOINTS without a builder, or a builder without a row."""
    rows = {(row.kind, row.name) for row in contract.ENDPOINTS}
    missing, extra = rows - set(BUILDERS), set(BUILDERS) - rows
    if missing or extra:
        raise RuntimeError(
            "every row of hubexport.contract.ENDPOINTS needs one builder in "
            "hubexport.reusable.BUILDERS, and every builder a row; rows without a builder: "
            f"{sorted(missing)}, builders without a row: {sorted(extra)} (add the one "
            "missing: a row, or a function decorated with @builds(kind, name))")


@builds(contract.FUNCTION, contract.CALL)
def _call(parts):
    return parts.call


@builds(contract.FUNCTION, contract.SERVE)
def _serve(parts):
    @tf.function(input_signature=[parts.spec], autograph=False)
    def serve(images):
        return parts.call(images, training=False)

    return serve


@builds(contract.FUNCTION, contract.SERVE_TRAINING)
def _serve_training(parts):
    @tf.function(input_signature=[parts.spec], autograph=False)
    def serve_training(images):
        return parts.call(images, training=True)

    return serve_training


@builds(contract.ATTRIBUTE, contract.VARIABLES)
def _variables(parts):
    return parts.variables


@builds(contract.ATTRIBUTE, contract.TRAINABLE_VARIABLES)
def _trainable_variables(parts):
    trainable_ids = {id(_tf_variable(v)) for v in parts.model.trainable_variables}
    return [v for v in parts.variables if id(v) in trainable_ids and v.trainable]


@builds(contract.ATTRIBUTE, contract.REGULARIZATION_LOSSES)
def _regularization(parts):
    return _regularization_losses(parts.model)


@builds(contract.SIGNATURE, contract.SERVING_DEFAULT)
def _serving_default(parts):
    call, output_key = parts.call, parts.output_key
    serving_default = tf.function(
        lambda images: {output_key: call(images, training=False)},
        input_signature=[parts.spec], autograph=False,
    )
    return serving_default.get_concrete_function()


@builds(contract.FUNCTION, contract.TOP_K_SIGNATURE)
def _top_k(parts):
    from hubexport import serving

    extras = parts.extras
    return serving.top_k_function(parts.call, parts.spec, extras.labels, extras.top_k,
                                  extras.activation)


@builds(contract.ASSET, contract.LABELS_ATTRIBUTE)
def _labels_file(parts):
    return tf.saved_model.Asset(parts.extras.labels_path)


@builds(contract.SIGNATURE, contract.TOP_K_SIGNATURE)
def _top_k_signature(parts):
    return parts.root.top_k.get_concrete_function()


@builds(contract.SIGNATURE, contract.BYTES_SIGNATURE)
def _bytes_signature(parts):
    from hubexport import serving

    return serving.bytes_function(_serving_outputs(parts),
                                  parts.extras.serving_size).get_concrete_function()


@builds(contract.SIGNATURE, contract.UINT8_SIGNATURE)
def _uint8_signature(parts):
    from hubexport import serving

    return serving.uint8_function(_serving_outputs(parts),
                                  parts.extras.serving_size).get_concrete_function()


def _serving_outputs(parts):
    """serving_default's outputs on float images, and top_k's when there are labels."""

    def serving_outputs(images):
        outputs = {parts.output_key: parts.call(images, training=False)}
        if parts.extras.labels:
            outputs.update(parts.root.top_k(images))
        return outputs

    return serving_outputs


# --- Batch normalization -----------------------------------------------------------


def batch_norm_layers(model):
    """Every batch normalization layer of `model` (Keras 3 or tf_keras), nested too."""
    import keras

    kinds = [keras.layers.BatchNormalization]
    try:
        import tf_keras

        kinds.append(tf_keras.layers.BatchNormalization)
    except ImportError:
        pass
    return [layer for layer in all_layers(model) if isinstance(layer, tuple(kinds))]


def all_layers(model):
    """Every layer of `model`, and of the models nested in it."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)


@contextlib.contextmanager
def _momentum_of(layers, momentum):
    """Sets every layer's momentum to the tensor `momentum` while tracing."""
    saved = [layer.momentum for layer in layers]
    try:
        if momentum is not None:
            for layer in layers:
                layer.momentum = momentum
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.momentum = value


def unique_by_identity(variables):
    """`variables` without repeats, in order (tf.Variables do not hash by value)."""
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
