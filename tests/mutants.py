"""One conforming SavedModel and minimally broken ones, each failing one check.

Every builder takes the directory to write. The good models come from
hubexport.reusable.make_root; the mutants are built by hand, the way
tensorflow_hub's keras_layer_test.py builds toy SavedModels: an AutoTrackable
root with tf.functions and lists of variables, from the pieces in `_root`, with
the one thing changed that the mutant is named for.

MUTANTS maps each check of hubexport.check to the builder that breaks it.
All models share a tiny Keras 3 model (Conv2D, BatchNormalization,
GlobalAveragePooling2D, Dense: 79 parameters for 8 features).
"""

import functools
import json
import os
import shutil

import keras
import tensorflow as tf

from hubexport import export
from hubexport import labels as hubexport_labels
from hubexport import reusable

FEATURES = 8
CLASSES = 5
IMAGES = reusable.image_spec()


@functools.cache
def tiny_model(outputs=FEATURES):
    """A built Keras 3 model with batch norm, shared by every SavedModel here."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, name="dense")(x))


def _variables(model):
    return [reusable._tf_variable(v) for v in model.variables]


def _trainable(model):
    return [reusable._tf_variable(v) for v in model.trainable_variables]


def _forward(model, images, training):
    return tf.cast(model(images, training=training), tf.float32)


# The conforming models.


def good(path, task="feature_vector", height=None, width=None):
    model = tiny_model(FEATURES if task == "feature_vector" else CLASSES)
    root, signatures, *_ = reusable.make_root(model, "unit", task, height, width)
    tf.saved_model.save(root, path, signatures=signatures)


def good_classification(path, labels_in_file=CLASSES, top_k=None):
    """A classifier with labels: top_k, raw-image signatures, batch_norm_momentum.

    top_k(call, labels): a replacement for the top_k signature (for a mutant).
    """
    labels = tuple(f"class {i}" for i in range(CLASSES))
    scratch = path + ".labels"
    os.makedirs(scratch)
    extras = reusable.Extras(
        serving_size=(32, 32), labels=labels, top_k=3,
        labels_path=hubexport_labels.write(labels[:labels_in_file], scratch),
        batch_norm_momentum=0.99)
    root, signatures, *_ = reusable.make_root(
        tiny_model(CLASSES), "unit", "classification", extras=extras)
    if top_k:
        root.top_k = top_k(root.__call__, labels)
        signatures["top_k"] = root.top_k.get_concrete_function()
    tf.saved_model.save(root, path, signatures=signatures)
    shutil.rmtree(scratch)

good_fixed_size = functools.partial(good, height=40, width=40)


# The pieces of a hand-built root.


def _root(model, call, key="feature_vector", traces=((IMAGES, False), (IMAGES, True))):
    """A reusable root around the tf.function `call`, traced for `traces`.

    serve, serve_training and serving_default call the model directly, so a
    mutant of __call__ leaves them intact.
    """
    for spec, training in traces:
        call.get_concrete_function(spec, training=training)

    @tf.function(input_signature=[IMAGES], autograph=False)
    def serve(images):
        return _forward(model, images, False)

    @tf.function(input_signature=[IMAGES], autograph=False)
    def serve_training(images):
        return _forward(model, images, True)

    @tf.function(input_signature=[IMAGES], autograph=False)
    def serving_default(images):
        return {key: _forward(model, images, False)}

    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = call
    root.serve = serve
    root.serve_training = serve_training
    root.variables = _variables(model)
    root.trainable_variables = _trainable(model)
    root.regularization_losses = []
    return root, {"serving_default": serving_default.get_concrete_function()}


def _serving_from(call, key="feature_vector"):
    """A serving_default that calls `call`, for the mutants whose __call__ changes
    what inference returns: the signature follows __call__, as it should."""
    serving_default = tf.function(lambda images: {key: call(images, training=False)},
                                  input_signature=[IMAGES], autograph=False)
    return {"serving_default": serving_default.get_concrete_function()}


def _serve_from(root, call):
    """`root` with an obj.serve that calls `call` too, as TFSMLayer's predictions
    should follow __call__ (the serve_endpoint check)."""
    root.serve = tf.function(lambda images: call(images, training=False),
                             input_signature=[IMAGES], autograph=False)
    return root


def _plain_call(model):
    @tf.function(autograph=False)
    def call(images, training=False):
        return _forward(model, images, training)

    return call


def _save(path, root_and_signatures):
    root, signatures = root_and_signatures
    tf.saved_model.save(root, path, signatures=signatures)


# One mutant per check, in the order of hubexport.check.CHECKS.


def tf1_hub_marker(path):
    """saved_model_files: a good TF2 model, but with TF1 Hub's marker file."""
    good(path)
    with open(os.path.join(path, "tfhub_module.pb"), "wb"):
        pass


def tf1_saved_model(path):
    """tf2_saved_model: a TF1 SavedModel (a graph and a signature, no objects)."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], "images")
        weights = tf.compat.v1.get_variable("w", [3, FEATURES])
        features = tf.matmul(tf.reduce_mean(images, [1, 2]), weights)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"images": images}, {"feature_vector": features}
            )
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()


def writes_file(path, target):
    """no_unsafe_ops: __call__ writes `target`, through a nested tf.function."""
    model = tiny_model()

    @tf.function(autograph=False)
    def leak(images):
        tf.io.write_file(target, tf.strings.as_string(tf.reduce_mean(images)))
        return tf.identity(images)

    @tf.function(autograph=False)
    def call(images, training=False):
        return _forward(model, leak(images), training)

    _save(path, _root(model, call))


def corrupt_variables(path):
    """loads: the files are all there, but variables.index is garbage."""
    good(path)
    with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
        f.write(b"not a checkpoint index")


def no_call(path):
    """restored_call: every attribute and endpoint except __call__."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    del root.__call__
    _save(path, (root, signatures))


def unlisted_variable(path):
    """variables: obj.variables leaves out the batch-norm moving mean.

    It is saved (as obj.moving_mean), but consumers that track obj.variables
    do not see it.
    """
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    root.moving_mean = model.get_layer("bn").moving_mean.value
    root.variables = [v for v in root.variables if v is not root.moving_mean]
    _save(path, (root, signatures))


def frozen_in_trainable(path):
    """trainable_variables: lists the (non-trainable) moving mean as trainable."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    moving_mean = [v for v in root.variables if "moving_mean" in v.name]
    root.trainable_variables = root.trainable_variables + moving_mean
    _save(path, (root, signatures))


def vector_regularization_loss(path):
    """regularization_losses: a loss that returns a vector, not a scalar."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    kernel = model.get_layer("dense").kernel.value
    loss = tf.function(lambda: tf.reduce_sum(tf.square(kernel), axis=0),
                       input_signature=[], autograph=False)
    loss.get_concrete_function()
    root.regularization_losses = [loss]
    _save(path, (root, signatures))


def unknown_channels(path):
    """input_signature: __call__ is traced for any number of channels."""
    model = tiny_model()
    spec = tf.TensorSpec([None, None, None, None], tf.float32, name="images")
    _save(path, _root(model, _plain_call(model), traces=((spec, False), (spec, True))))


def training_default_true(path):
    """training_argument: `training` defaults to True (both values traced)."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=True):
        return _forward(model, images, training)

    _save(path, _root(model, call))


def training_fails(path):
    """training_call: the training=True trace is saved but fails when it runs."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        if training:  # A check that real images never pass: values are in [0, 1].
            tf.debugging.assert_less(tf.reduce_max(images), -1.0, message="broken trace")
        return _forward(model, images, training)

    _save(path, _root(model, call))


def noisy(path):
    """deterministic: inference adds random noise."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        outputs = _forward(model, images, training)
        return outputs + tf.random.uniform(tf.shape(outputs), maxval=1e-2)

    _save(path, _root(model, call))


def batch_statistics(path):
    """batch_independent: inference centers the images on the batch mean."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        centered = images - tf.reduce_mean(images, axis=0, keepdims=True) + 0.5
        return _forward(model, centered, training)

    _save(path, (_serve_from(_root(model, call)[0], call), _serving_from(call)))


def float64_output(path):
    """output_tensor: the output is float64."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        return tf.cast(_forward(model, images, training), tf.float64)

    _save(path, _root(model, call))


def log_of_input(path):
    """output_finite: adds log(mean image), which is -inf for black images."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        log_mean = tf.math.log(tf.reduce_mean(images, axis=[1, 2, 3]))
        return _forward(model, images, training) + log_mean[:, None]

    _save(path, (_serve_from(_root(model, call)[0], call), _serving_from(call)))


def _size_dependent_call(model, static_size):
    """8 features at 224x224, but 2 * (height // 56) in general."""

    @tf.function(autograph=False)
    def call(images, training=False):
        features = _forward(model, images, training)
        count = 2 * (tf.shape(images)[1] // 56)
        outputs = tf.tile(features, [1, 2])[:, :count]
        outputs.set_shape([None, static_size])
        return outputs

    return call


def fails_at_other_sizes(path):
    """Free height and width, but only 224x224 works.

    The output claims the static shape [None, 8], so heads build and fit at
    224x224, and a call at another size fails when TensorFlow finds the
    output does not have that shape (like NASNet's cells on some sizes).
    """
    model = tiny_model()
    _save(path, _root(model, _size_dependent_call(model, FEATURES)))


def square_only(path):
    """free_size: free height and width, but the call averages each image with its
    transpose (height and width confused), which has its shape only when square."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        mixed = 0.5 * (images + tf.transpose(images, [0, 2, 1, 3]))
        return _forward(model, mixed, training)

    root, _ = _root(model, call)
    _save(path, (_serve_from(root, call), _serving_from(call)))


def size_dependent_features(path):
    """feature_size_constant: the feature vector's size follows the image size."""
    model = tiny_model()
    _save(path, _root(model, _size_dependent_call(model, None)))


def softmax_outputs(path):
    """logits_not_probabilities: a classifier returning softmax probabilities."""
    model = tiny_model(CLASSES)

    @tf.function(autograph=False)
    def call(images, training=False):
        return tf.nn.softmax(_forward(model, images, training))

    root = _serve_from(_root(model, call, key="logits")[0], call)
    _save(path, (root, _serving_from(call, "logits")))


def hparam_inference_only(path):
    """hyperparameters: `scale` is traced as a tensor with training=False only."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False, scale=1.0):
        return _forward(model, images, training) * scale

    call.get_concrete_function(IMAGES, training=False, scale=tf.TensorSpec([], tf.float32))
    _save(path, _root(model, call))


def stopped_gradients(path):
    """training_gradients: training=True stops gradients below the pooling."""
    model = tiny_model()
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    pool, dense = model.get_layer("pool"), model.get_layer("dense")

    @tf.function(autograph=False)
    def call(images, training=False):
        x = bn(conv(images), training=training)
        if training:
            x = tf.stop_gradient(x)
        return tf.cast(dense(pool(x)), tf.float32)

    _save(path, _root(model, call))


def training_ignored(path):
    """hub_fine_tuning: training=True is traced but runs inference mode."""
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        del training  # The mistake: batch norm never sees training=True.
        return _forward(model, images, False)

    _save(path, _root(model, call))


def counts_inference_calls(path):
    """hub_frozen: the training=False call increments a counter variable."""
    model = tiny_model()
    calls = tf.Variable(0.0, trainable=False, name="calls")

    @tf.function(autograph=False)
    def call(images, training=False):
        if not training:
            calls.assign_add(1.0)
        return _forward(model, images, training)

    root, signatures = _root(model, call)
    root.variables = root.variables + [calls]
    _save(path, (root, signatures))


def no_serve_training(path):
    """tfsm_layer: no serve_training endpoint for TFSMLayer."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    del root.serve_training
    _save(path, (root, signatures))


def serve_offset(path):
    """serve_endpoint: obj.serve adds 1 to what obj(images) returns."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    root.serve = tf.function(lambda images: _forward(model, images, False) + 1.0,
                             input_signature=[IMAGES], autograph=False)
    _save(path, (root, signatures))


def serve_training_inference(path):
    """serve_training_mode: obj.serve_training calls the model with training=False."""
    model = tiny_model()
    root, signatures = _root(model, _plain_call(model))
    root.serve_training = tf.function(lambda images: _forward(model, images, False),
                                      input_signature=[IMAGES], autograph=False)
    _save(path, (root, signatures))


def miscounted_labels(path):
    """top_k_labels: assets/labels.txt names 4 of the 5 classes."""
    good_classification(path, labels_in_file=CLASSES - 1)


def fewer_logits_at_other_sizes(path):
    """free_size: a free-size classifier with 5 logits at 224x224, 4 at other sizes."""
    model = tiny_model(CLASSES)

    @tf.function(autograph=False)
    def call(images, training=False):
        other_size = tf.cast(tf.shape(images)[1] != 224, tf.int32)
        return _forward(model, images, training)[:, :CLASSES - other_size]

    _save(path, (_root(model, call, key="logits")[0], _serving_from(call, "logits")))


def misdocumented_size(path):
    """documented_output_size: the provenance file says 16 features; there are 8."""
    good(path)
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, export.PROVENANCE_FILE), "w") as f:
        json.dump({"task": "feature_vector",
                   "output": {"key": "feature_vector", "size": 2 * FEATURES}}, f)


def ignored_hyperparameters(path):
    """hyperparameter_effects: batch_norm_momentum and scale are taken and ignored.

    Both are traced as tensors with training=False and True, and have
    defaults, so the hyperparameters check passes; the batch norm layer keeps
    its own momentum.
    """
    model = tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False, batch_norm_momentum=0.99, scale=1.0):
        del batch_norm_momentum, scale  # The mistake.
        return _forward(model, images, training)

    scalar = tf.TensorSpec([], tf.float32)
    for training in (False, True):
        call.get_concrete_function(IMAGES, training=training, batch_norm_momentum=scalar,
                                   scale=scalar)
    _save(path, _root(model, call))


def next_class_top_k(call, labels):
    """A top_k that names, at each place, the class after the right one."""
    table = tf.constant(labels)

    @tf.function(input_signature=[IMAGES], autograph=False)
    def top_k(images):
        confidences, indices = tf.math.top_k(tf.nn.softmax(call(images, training=False)), 3)
        return {"labels": tf.gather(table, (indices + 1) % len(labels)),
                "confidences": confidences}

    return top_k


wrong_class_labels = functools.partial(good_classification, top_k=next_class_top_k)


def serving_rescaled(path):
    """serving_output: serving_default feeds the model 0..255, __call__ [0, 1]."""
    model = tiny_model()

    @tf.function(input_signature=[IMAGES], autograph=False)
    def serving_default(images):
        return {"feature_vector": _forward(model, 255.0 * images, False)}

    root, _ = _root(model, _plain_call(model))
    _save(path, (root, {"serving_default": serving_default.get_concrete_function()}))


def serving_output_0(path):
    """serving_signature: the output key is Keras' default "output_0"."""
    model = tiny_model()
    _save(path, _root(model, _plain_call(model), key="output_0"))


MUTANTS = {
    "saved_model_files": tf1_hub_marker,
    "tf2_saved_model": tf1_saved_model,
    "no_unsafe_ops": writes_file,
    "loads": corrupt_variables,
    "restored_call": no_call,
    "variables": unlisted_variable,
    "trainable_variables": frozen_in_trainable,
    "regularization_losses": vector_regularization_loss,
    "input_signature": unknown_channels,
    "training_argument": training_default_true,
    "training_call": training_fails,
    "deterministic": noisy,
    "batch_independent": batch_statistics,
    "output_tensor": float64_output,
    "output_finite": log_of_input,
    "feature_size_constant": size_dependent_features,
    "logits_not_probabilities": softmax_outputs,
    "top_k_labels": miscounted_labels,
    "hyperparameters": hparam_inference_only,
    "training_gradients": stopped_gradients,
    "hub_fine_tuning": training_ignored,
    "hub_frozen": counts_inference_calls,
    "tfsm_layer": no_serve_training,
    "serve_endpoint": serve_offset,
    "serve_training_mode": serve_training_inference,
    "serving_signature": serving_output_0,
    "free_size": fewer_logits_at_other_sizes,
    "documented_output_size": misdocumented_size,
    "hyperparameter_effects": ignored_hyperparameters,
    "serving_output": serving_rescaled,
}


# Directories that are barely SavedModels, for the robustness tests.


def empty_directory(path):
    os.makedirs(path)


def garbage_saved_model(path):
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"\x08\xff\xff garbage, not a protocol buffer \x00\x01")
    os.makedirs(os.path.join(path, "variables"))


def missing_variables(path):
    good(path)
    shutil.rmtree(os.path.join(path, "variables"))


def tf1_hub_module(path):
    """The obsolete TF1 Hub format: a TF1 SavedModel beside tfhub_module.pb."""
    tf1_saved_model(path)
    with open(os.path.join(path, "tfhub_module.pb"), "wb"):
        pass


def keras_signature_only(path):
    """What tf.saved_model.save(keras3_model) gives: a signature and no __call__."""
    tf.saved_model.save(tiny_model(), path)


def rank3_input(path):
    """__call__ takes [batch, height, width] (grayscale without a channel axis)."""
    model = tiny_model()
    spec = tf.TensorSpec([None, None, None], tf.float32, name="images")

    @tf.function(autograph=False)
    def call(images, training=False):
        return _forward(model, tf.stack([images] * 3, axis=-1), training)

    _save(path, _root(model, call, traces=((spec, False), (spec, True))))


# The mutant of the optional LiteRT consumer (litert_conversion; hubexport.check.litert).


def string_op_serving(path):
    """litert_conversion: serving_default adds 0 times the length of its outputs printed
    as strings (AsString, StringLength: TF ops LiteRT has no builtin for), so it
    returns what __call__ does but converts only with Flex ops."""
    model = tiny_model()
    root, _ = _root(model, _plain_call(model))

    @tf.function(input_signature=[IMAGES], autograph=False)
    def serving_default(images):
        features = _forward(model, images, False)
        digits = tf.strings.length(tf.strings.as_string(features))
        return {"feature_vector": features + 0.0 * tf.cast(digits, tf.float32)}

    tf.saved_model.save(root, path,
                        signatures={"serving_default": serving_default.get_concrete_function()})


MUTANTS["litert_conversion"] = string_op_serving
# What checker.check is given for a mutant: an optional consumer's findings are
# errors only when required.
CHECK_OPTIONS = {"litert_conversion": {"require": ("litert",)}}
