"""The Keras model behind an export: a Keras application built from its row of
the architecture table, or the user's own model file, as a Built.
"""

import dataclasses
import warnings

from hubexport import own_model
from hubexport import weights as weights_lib
from hubexport.errors import UserError, summarize
from hubexport.export.planning import _check_labels
from hubexport.contract import CLASSIFICATION


@dataclasses.dataclass(frozen=True)
class Built:
    """The Keras model behind an export, and the facts its build settled."""

    model: object  # Preprocessed images -> float [batch, N].
    input_hw: tuple  # The signature's (height, width); None where free.
    size: tuple  # (height, width) of the verification and of raw-image serving.
    output_size: int
    activation: str | None  # Classification: "softmax" or "sigmoid".
    batch_norm_momentum: float | None  # __call__'s keyword default; None: none.
    # What the model computes as saved (own classifiers: with the activation
    # the export removed), on preprocessed input; None when not comparable.
    as_saved: object = None
    # The activation the export took off an own classifier's last layer, which
    # the verification applies again before comparing with as_saved (None: the
    # model as saved already gives logits).
    removed_activation: str | None = None


def build_model(plan, log=lambda message: None):
    """The Keras model behind the export, as a Built."""
    if plan.keras_model is not None:
        built = _build_own_model(plan, log)
    else:
        built = _build_application(plan, log)
    if plan.task == CLASSIFICATION:
        _check_labels(plan.labels, plan.top_k, built.output_size, plan.name)
    return built


def _build_application(plan, log):
    arch = plan.architecture
    keras = arch.keras_module()
    # Fresh layer names, so weights files match by name however many models
    # this process has built before.
    keras.backend.clear_session()
    height, width = arch.input_hw(plan.task, plan.image_size)
    kwargs = dict(weights=plan.weights.keras_argument, input_shape=(height, width, 3))
    if plan.task == CLASSIFICATION:
        kwargs.update(include_top=True, classifier_activation=None)
    elif plan.feature_layer:
        kwargs.update(include_top=False)
    else:
        kwargs.update(include_top=False, pooling=plan.pooling)
    model = _construct(plan, kwargs, log)
    if plan.weights.source == "file":
        weights_lib.load_file(model, plan.weights, plan.describe())
    input_hw = (height, width)
    if plan.feature_layer:
        if plan.feature_layer not in {layer.name for layer in model.layers}:
            # Layers of the classifier (VGG's fc1, ...) exist only in the full
            # model, which has a fixed size.
            kwargs.update(include_top=True, classifier_activation=None,
                          input_shape=(plan.image_size, plan.image_size, 3))
            keras.backend.clear_session()
            model = _construct(plan, kwargs, log)
            if plan.weights.source == "file":
                weights_lib.load_file(model, plan.weights, plan.describe())
            input_hw = (plan.image_size, plan.image_size)
        model = _feature_model(keras, *own_model.find_layer(model, plan.feature_layer),
                               plan.pooling)
    activation = "softmax" if plan.task == CLASSIFICATION else None
    return _built(plan, model, input_hw, activation, log)


def _construct(plan, kwargs, log):
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = plan.architecture.constructor()(**kwargs)
        for warning in caught:
            log(f"note from Keras: {warning.message}")
        return model
    except Exception as e:
        offline = weights_lib.offline_error(
            plan.architecture.name, e, plan.architecture.library)
        if offline:
            raise offline from None
        if isinstance(e, ValueError):
            raise UserError(f"Keras refuses {plan.describe()}: {summarize(e)}") from None
        raise


def _feature_model(keras, container, layer, pooling):
    """container's input -> `layer`'s output, pooled to [batch, N] if it is a map."""
    output = layer.output
    if len(output.shape) == 4:
        pool = {"avg": keras.layers.GlobalAveragePooling2D,
                "max": keras.layers.GlobalMaxPooling2D}[pooling]
        output = pool(name=f"{pooling}_pool_{layer.name}")(output)
    elif len(output.shape) != 2:
        raise UserError(
            f"--feature_layer={layer.name} outputs shape {tuple(output.shape)}; allowed: "
            "a layer whose output is [batch, height, width, channels] (pooled) or "
            "[batch, features]"
        )
    return keras.Model(container.inputs, output)


def _build_own_model(plan, log):
    import keras
    import tensorflow as tf

    model = own_model.load(plan.keras_model)
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise UserError(
            f"--keras_model={plan.keras_model.path} takes input of shape {model.input_shape}; "
            "allowed: one input [batch, height, width, 3] (RGB images, channels last)"
        )
    input_hw = shape[1:3]
    if plan.image_size and None not in input_hw and plan.image_size != max(input_hw):
        raise UserError(
            f"--image_size={plan.image_size} does not fit the model, which takes "
            f"{input_hw[0]}x{input_hw[1]} images; drop --image_size"
        )
    size = tuple(d or plan.image_size or 224 for d in input_hw)
    as_saved = None
    if plan.task == CLASSIFICATION or not (plan.feature_layer or len(model.output_shape) == 4):
        # The export computes the model's own output (up to the activation it
        # removes): traced before anything is changed, for the verification.
        as_saved = tf.function(lambda x: model(x, training=False), autograph=False
                               ).get_concrete_function(tf.TensorSpec([None, *input_hw, 3], tf.float32))
    activation = removed = None
    if plan.task == CLASSIFICATION:
        if len(model.output_shape) != 2:
            raise UserError(
                f"--keras_model={plan.keras_model.path} outputs shape {model.output_shape}; "
                "a classifier must output [batch, classes]"
            )
        model, removed = own_model.without_activation(model)
        if removed == "softmax" and plan.multi_label:
            raise UserError(
                "--multi_label contradicts the model's last layer, which applies softmax "
                "(one class per image); drop --multi_label"
            )
        if removed:
            log(f"Removed the last layer's {removed}: the export returns logits")
        activation = "sigmoid" if removed == "sigmoid" or plan.multi_label else "softmax"
    elif plan.feature_layer:
        model = _feature_model(keras, *own_model.find_layer(model, plan.feature_layer),
                               plan.pooling)
    elif len(model.output_shape) == 4:
        model = _feature_model(keras, model, model.layers[-1], plan.pooling)
    elif len(model.output_shape) != 2:
        raise UserError(
            f"--keras_model={plan.keras_model.path} outputs shape {model.output_shape}; "
            "a feature vector must be [batch, features] (or a map, pooled); pass "
            "--feature_layer=NAME to export another layer"
        )
    return _built(plan, model, input_hw, activation, log, size=size, as_saved=as_saved,
                  removed_activation=removed if plan.task == CLASSIFICATION else None)


def _built(plan, model, input_hw, activation, log, size=None, as_saved=None,
           removed_activation=None):
    from hubexport import reusable

    momenta = {float(layer.momentum) for layer in reusable.batch_norm_layers(model)}
    if len(momenta) > 1:
        log(f"No batch_norm_momentum keyword: the batch norm layers use {sorted(momenta)}")
    return Built(
        model=model,
        input_hw=tuple(input_hw),
        size=size or tuple(d or plan.image_size for d in input_hw),
        output_size=int(model.output_shape[-1]),
        activation=activation,
        batch_norm_momentum=momenta.pop() if len(momenta) == 1 else None,
        as_saved=as_saved,
        removed_activation=removed_activation,
    )


_DEPTHWISE = ("DepthwiseConv2D", "SeparableConv2D")  # Keras 3 and tf_keras names.


def _warn_of_depthwise_under_xla(model, log):
    """XLA made depthwise models 5-13x slower on CPU (BUILD_NOTES.md, issue 5)."""
    from hubexport import reusable

    count = sum(type(layer).__name__ in _DEPTHWISE for layer in reusable.all_layers(model))
    if count:
        layers = "layer" if count == 1 else "layers"
        log(f"Warning: --jit_compile on a model with {count} depthwise convolution "
            f"{layers}: on CPU, XLA ran MobileNetV2 and EfficientNetB0 5-13x slower than "
            "without it; measure with benchmarks/compare.py --jit_compile, or export "
            "without --jit_compile")
