"""A Keras 3 layer around any reusable SavedModel (HUB_CONTRACT.md R1-R4, C2, C5).

Why not `keras.layers.TFSMLayer`: it wraps each restored variable in a Keras
variable named after the tf.Variable's name, and a tf.Variable's name always
ends in ":0" (TensorFlow appends it to every eager variable, restored ones
included, so no SavedModel can avoid it). Keras 3 optimizers name their slot
variables after the model variable's path (`add_variable_from_reference`:
"conv_kernel:0_momentum") and, in a default fit, create them inside the first
traced train step, where TensorFlow refuses that name as a scope name: `fit`
fails with Adam, AdamW, RMSprop, SGD with momentum, any optimizer with slots
(only with run_eagerly=True, or `model.optimizer.build(...)` before fit, are
the slots made eagerly, where the name is not checked). TFSMLayer also has
no `regularization_losses` and no hyperparameters. `hub.KerasLayer` cannot go
in a Keras 3 model (it is a tf_keras layer).

ReusableLayer is what hub.KerasLayer does, for Keras 3: it calls
`obj(images, training=..., **arguments)`, tracks obj.trainable_variables as
trainable weights and the rest of obj.variables (batch-norm statistics) as
non-trainable ones, under names that are valid scope names, and adds
obj.regularization_losses to the model's losses when trainable. It imports
neither tensorflow_hub nor tf_keras.
"""

import keras
import tensorflow as tf


class ReusableLayer(keras.layers.Layer):
    """`obj(images, training=..., **arguments)` of a reusable SavedModel, as a layer.

    Args:
      path_or_loaded: the SavedModel's directory, or what
        `tf.saved_model.load` gave for it (loaded once, shared).
      trainable: fine-tune the backbone's trainable variables. When False,
        the backbone also runs in inference mode (training=False), so a
        fit moves nothing in it, batch-norm statistics included.
      arguments: keyword hyperparameters for every call (C5), e.g.
        dict(batch_norm_momentum=0.997).
      **layer_kwargs: name, dtype... of keras.layers.Layer (dtype defaults to
        float32: the contract's images are float32).
    """

    def __init__(self, path_or_loaded, trainable=True, arguments=None, **layer_kwargs):
        layer_kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=trainable, **layer_kwargs)
        loaded = path_or_loaded
        if isinstance(path_or_loaded, (str, bytes)) or hasattr(path_or_loaded, "__fspath__"):
            loaded = tf.saved_model.load(path_or_loaded)
        self._loaded = loaded
        self._arguments = dict(arguments or {})
        self._has_training = _takes_training(loaded.__call__)
        self._losses_of_model = list(getattr(loaded, "regularization_losses", []))
        self._track_backbone_variables(loaded)
        self.built = True

    def _track_backbone_variables(self, loaded):
        """Keras variables wrapping (not copying) the restored tf.Variables."""
        trainable_ids = {id(v) for v in getattr(loaded, "trainable_variables", [])}
        with keras.name_scope(self.name, caller=self):
            for variable in getattr(loaded, "variables", []):
                self._track_variable(keras.Variable(
                    initializer=variable, trainable=id(variable) in trainable_ids,
                    dtype=variable.dtype, shape=variable.shape, autocast=False,
                    name=keras_name(variable.name)))

    def call(self, inputs, training=None):
        training = bool(training) and self.trainable
        if self.trainable:
            for loss in self._losses_of_model:
                self.add_loss(loss())
        kwargs = dict(self._arguments)
        if self._has_training:
            kwargs["training"] = training
        return self._loaded(inputs, **kwargs)


def keras_name(variable_name):
    """A tf.Variable's name as a Keras variable name: "conv/kernel:0" -> "conv_kernel"."""
    name = variable_name[:-2] if variable_name.endswith(":0") else variable_name
    return name.replace("/", "_").replace(":", "_")


def _takes_training(function):
    """Whether the restored __call__ has a `training` argument (as hub checks)."""
    spec = getattr(function, "function_spec", None)
    if spec is None:
        return False
    return "training" in spec.fullargspec.args + spec.fullargspec.kwonlyargs
