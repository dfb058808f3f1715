"""Wraps a Keras 3 model in the reusable-SavedModel API of HUB_CONTRACT.md.

Keras 3 `model.export()` gives only a `serve` endpoint, and a plain
`tf.saved_model.save(model)` only a signature, so the root object is built by
hand: an AutoTrackable with

  __call__(images, training=False)   traced for training=False and True (R1, C2)
  variables, trainable_variables     lists of tf.Variables (R2, R3)
  regularization_losses              zero-argument tf.functions (R4)
  serve(images), serve_training(images)   for keras.layers.TFSMLayer (K2)

and the `serving_default` signature for TF Serving (K3). All endpoints call
the one traced `__call__`, so the graph of the model is stored once.
"""

import tensorflow as tf

from hubexport import preprocessing as preprocessing_lib

OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}


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


def make_root(model, preprocessing, task, height=None, width=None):
    """Returns (root, signatures, reference).

    `root` and `signatures` are ready for `tf.saved_model.save`;
    `reference(x)` is the model's own training=False trace, the one
    `__call__` calls, on already preprocessed input.

    Args:
      model: a built Keras 3 model taking preprocessed images and returning
        [batch, N] (features or logits).
      preprocessing: a mode of hubexport.preprocessing.
      task: "feature_vector" or "classification".
      height, width: the fixed input size, or None where it is free.
    """
    spec = image_spec(height, width)
    output_key = OUTPUT_KEYS[task]

    # The model on preprocessed input, traced once per value of training. The
    # export's verification calls it directly, as the graph-mode reference.
    @tf.function(autograph=False)
    def backbone(inputs, training):
        return tf.cast(model(inputs, training=training), tf.float32)

    def call(images, training=False):
        return backbone(preprocessing_lib.preprocess(images, preprocessing), training)

    call_fn = tf.function(call, autograph=False)
    traces = [
        call_fn.get_concrete_function(spec, training=False),
        call_fn.get_concrete_function(spec, training=True),
    ]

    @tf.function(input_signature=[spec], autograph=False)
    def serve(images):
        return call_fn(images, training=False)

    @tf.function(input_signature=[spec], autograph=False)
    def serve_training(images):
        return call_fn(images, training=True)

    @tf.function(input_signature=[spec], autograph=False)
    def serving_default(images):
        return {output_key: call_fn(images, training=False)}

    variables = unique_by_identity([_tf_variable(v) for v in model.variables] + [
        v for trace in traces for v in trace.variables
    ])
    trainable_ids = {id(_tf_variable(v)) for v in model.trainable_variables}

    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = call_fn
    root.serve = serve
    root.serve_training = serve_training
    root.variables = variables
    root.trainable_variables = [
        v for v in variables if id(v) in trainable_ids and v.trainable
    ]
    root.regularization_losses = _regularization_losses(model)
    signatures = {"serving_default": serving_default.get_concrete_function()}
    reference = backbone.get_concrete_function(spec, training=False)
    return root, signatures, reference


def unique_by_identity(variables):
    """`variables` without repeats, in order (tf.Variables do not hash by value)."""
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
