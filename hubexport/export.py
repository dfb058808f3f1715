"""Exports a Keras application as a reusable image SavedModel.

    plan = export.plan("MobileNetV2", "feature_vector", image_size=224,
                       weights="none")
    export.export(plan, "/tmp/mobilenet_v2", overwrite=False)

The SavedModel is written to a temporary directory beside the output, reloaded
and compared with the source Keras model on the same input, and only then moved
into place. A failure or an interrupt removes the temporary directory and leaves
an existing output untouched.
"""

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
import warnings

from hubexport import architectures, grappler, own_model
from hubexport import labels as labels_lib
from hubexport import weights as weights_lib
from hubexport.errors import UserError, summarize

PROVENANCE_FILE = os.path.join("assets.extra", "hubexport.json")
TOLERANCE = 1e-4  # Relative to the largest magnitude of the reference output.
_VERIFY_BATCH = 2


class VerificationError(RuntimeError):
    """The reloaded SavedModel does not compute what the Keras model computes."""


POOLINGS = ("avg", "max")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated export request; building it does not import TensorFlow.

    The source is an `architecture` (a row of the table) or a `keras_model`
    (a user's own model file); exactly one is set.
    """

    architecture: architectures.Architecture | None
    task: str
    image_size: int | None  # None: an own model's own size (224 if it is free).
    weights: weights_lib.Weights
    keras_model: own_model.OwnModel | None = None
    labels: tuple | None = None
    top_k: int = 5
    multi_label: bool = False
    feature_layer: str | None = None
    pooling: str = "avg"
    jit_compile: bool = False  # The inference path compiled with XLA.

    @property
    def name(self):
        return self.architecture.name if self.architecture else self.keras_model.name

    @property
    def preprocessing(self):
        source = self.architecture or self.keras_model
        return source.preprocessing

    def describe(self):
        layer = f" ({self.feature_layer})" if self.feature_layer else ""
        size = f" at {self.image_size}x{self.image_size}" if self.image_size else ""
        jit = " (XLA)" if self.jit_compile else ""
        return f"{self.name} {self.task}{layer}{size}{jit}"


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


@dataclasses.dataclass(frozen=True)
class Result:
    path: str
    seconds: float
    max_relative_difference: float
    # With keep_loaded: what tf.saved_model.load gave the verification (the
    # same files, moved into place), for a check in the same process.
    loaded: object = dataclasses.field(default=None, repr=False, compare=False)


def plan(architecture=None, task=None, image_size=None, weights=None, *,
         keras_model=None, preprocessing=None, custom_objects=None, labels=None,
         top_k=None, multi_label=False, feature_layer=None, pooling=None,
         jit_compile=False):
    """Validates a request; raises UserError with the fix if it is refused.

    `labels` is the path of a labels file; the other arguments are the CLI
    flags of the same names.
    """
    if (architecture is None) == (keras_model is None):
        raise UserError(
            "pass exactly one of --architecture=NAME (a Keras application) and "
            "--keras_model=PATH (your own .keras or .h5 model)"
        )
    architectures.check_task(task)
    _only_for("classification", task, labels=labels, top_k=top_k, multi_label=multi_label)
    _only_for("feature_vector", task, feature_layer=feature_layer, pooling=pooling)
    if top_k is not None and labels is None:
        raise UserError("--top_k needs --labels=FILE (the top_k signature returns label names)")
    if pooling is not None and pooling not in POOLINGS:
        raise UserError(f"--pooling={pooling} is unknown; allowed: {', '.join(POOLINGS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UserError(
            f"image_size must be a whole number of pixels; received {image_size!r}"
        )
    if not isinstance(jit_compile, bool):
        raise UserError(f"jit_compile must be true or false; received {jit_compile!r}")
    top_k = 5 if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"--top_k must be a whole number of at least 1; received {top_k!r}")
    read_labels = labels_lib.read(labels) if labels is not None else None
    options = dict(task=task, labels=read_labels, top_k=top_k,
                   multi_label=bool(multi_label), feature_layer=feature_layer,
                   pooling=pooling or "avg", jit_compile=jit_compile)
    if keras_model is not None:
        if weights is not None:
            raise UserError(
                "--weights does not apply to --keras_model (its weights are in the "
                "file); drop --weights"
            )
        source = own_model.parse(keras_model, preprocessing, custom_objects)
        return Plan(None, image_size=image_size, weights=weights_lib.Weights("file", source.path,
                    source.sha256), keras_model=source, **options)
    for flag, value in (("preprocessing", preprocessing), ("custom_objects", custom_objects)):
        if value is not None:
            raise UserError(
                f"--{flag} applies only to --keras_model; {architecture} has its "
                "own (see the architecture table); drop it"
            )
    arch = architectures.lookup(architecture)
    image_size = arch.default_size if image_size is None else image_size
    parsed = weights_lib.parse("imagenet" if weights is None else weights)
    problem = arch.size_problem(task, image_size, parsed.source == "imagenet")
    if problem:
        raise UserError(problem)
    if task == "classification":
        _check_labels(read_labels, top_k, architectures.IMAGENET_CLASSES, arch.name)
    return Plan(arch, image_size=image_size, weights=parsed, **options)


def _only_for(task, requested, **values):
    for flag, value in values.items():
        if value not in (None, False) and requested != task:
            raise UserError(
                f"--{flag} applies only to --task={task}; drop it or use that task"
            )


def _check_labels(labels, top_k, num_classes, source):
    labels_lib.check_count(labels, num_classes, source)
    if labels is not None and top_k > num_classes:
        raise UserError(
            f"--top_k={top_k} is more than the {num_classes} classes of {source}; "
            f"allowed: 1 to {num_classes}"
        )


def build_model(plan, log=lambda message: None):
    """The Keras model behind the export, as a Built."""
    if plan.keras_model is not None:
        built = _build_own_model(plan, log)
    else:
        built = _build_application(plan, log)
    if plan.task == "classification":
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
    if plan.task == "classification":
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
    activation = "softmax" if plan.task == "classification" else None
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
    if plan.task == "classification" or not (plan.feature_layer or len(model.output_shape) == 4):
        # The export computes the model's own output (up to the activation it
        # removes): traced before anything is changed, for the verification.
        as_saved = tf.function(lambda x: model(x, training=False), autograph=False
                               ).get_concrete_function(tf.TensorSpec([None, *input_hw, 3], tf.float32))
    activation = None
    if plan.task == "classification":
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
    return _built(plan, model, input_hw, activation, log, size=size, as_saved=as_saved)


def _built(plan, model, input_hw, activation, log, size=None, as_saved=None):
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
    )


def export(plan, output, overwrite=False, log=lambda message: None, keep_loaded=False, *,
           overwrite_any_saved_model=False, inputs=()):
    """Exports `plan` to the directory `output`; returns a Result.

    overwrite: replace an existing output that hubexport wrote (check_output);
    overwrite_any_saved_model: replace any SavedModel directory.
    inputs: files the export is made from besides plan_inputs(plan) (a labels
      file, a config), which the output must neither be nor contain.
    keep_loaded: return the object the verification loaded in Result.loaded,
    so that a check that follows (hubexport.checker.check(..., loaded=...))
    neither loads the model again nor prepares its functions again.
    """
    output = check_destination(plan, output, overwrite, overwrite_any_saved_model, inputs)
    replace = dict(overwrite=overwrite, overwrite_any_saved_model=overwrite_any_saved_model,
                   inputs=(*inputs, *plan_inputs(plan)))
    start = time.monotonic()

    log(f"Building {plan.describe()} (weights: {plan.weights.describe()})")
    built = build_model(plan, log)
    if plan.jit_compile:
        _warn_of_depthwise_under_xla(built.model, log)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        _chmod_like_mkdir(staging)
        log("Tracing and saving")
        reference = _save(built, plan, staging)
        log("Reloading and comparing with the Keras model")
        with grappler.disabled():
            loaded = _load(staging)
            difference = verify(loaded, reference, plan, built)
        _write_provenance(staging, plan, built, difference)
        _install(staging, output, **replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    log(f"Wrote {output} ({seconds:.1f}s, max relative difference {difference:.1e})")
    return Result(output, seconds, difference, loaded if keep_loaded else None)


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


def check_destination(plan, output, overwrite=False, overwrite_any_saved_model=False,
                      inputs=()):
    """`output` made absolute, once `plan`'s export may write it there.

    check_output (with plan_inputs(plan) among the inputs), then
    check_writable_parent: what export() does first, and what the CLI calls
    before it imports TensorFlow.
    """
    output = os.path.abspath(os.path.expanduser(output))
    check_output(output, overwrite, overwrite_any_saved_model, (*inputs, *plan_inputs(plan)))
    check_writable_parent(output)
    return output


def plan_inputs(plan):
    """The files an export of `plan` reads: its own model file and weights file."""
    paths = [plan.weights.path if plan.weights.source == "file" else None]
    if plan.keras_model is not None:
        paths.append(plan.keras_model.path)
    return tuple(path for path in paths if path)


def check_output(output, overwrite=False, overwrite_any_saved_model=False, inputs=(),
                 flag="--output"):
    """Refuses an output whose replacement could lose what hubexport did not write.

    An existing output may be replaced (with overwrite) only if it is an empty
    directory or a SavedModel carrying hubexport's provenance, or (with
    overwrite_any_saved_model) any SavedModel directory. An output that is,
    or contains, one of `inputs` (model, weights, labels or config files) is
    refused in any case. Checked before the model is built and again just
    before the move into place (_install): a long export gives a directory
    time to change.
    """
    shown = f"{flag}={output}" if flag else output
    problem = (inputs_refusal(output, inputs, shown)
               or replace_refusal(output, overwrite, overwrite_any_saved_model, shown))
    if problem:
        raise UserError(problem)


def inputs_refusal(output, inputs, shown):
    """Why `output` may not be written because it is or holds an input, or None."""
    target = os.path.realpath(output)
    for path in inputs:
        if not path:
            continue
        real = os.path.realpath(os.path.expanduser(path))
        if real == target or os.path.commonpath([real, target]) == target:
            where = "is" if real == target else "contains"
            return (f"{shown} {where} the input {path}; replacing it would destroy "
                    "what the export is made from: choose another output directory")
    return None


def replace_refusal(output, overwrite, overwrite_any_saved_model, shown):
    """Why the existing `output` may not be replaced, or None (see check_output)."""
    if os.path.islink(output):
        return f"{shown} is a symlink; pass the directory it points to, or another path"
    if not os.path.exists(output):
        return None
    if not os.path.isdir(output):
        return f"{shown} is a file; pass a directory path"
    entries = sorted(os.listdir(output))
    if not entries or written_by_hubexport(output):
        if overwrite or overwrite_any_saved_model:
            return None
        return (f"{shown} already exists; pass --overwrite to replace it, "
                "or choose another directory")
    if is_saved_model(output):
        if overwrite_any_saved_model:
            return None
        return (f"{shown} is a SavedModel that hubexport did not write (no {PROVENANCE_FILE} "
                "of hubexport's); --overwrite replaces only hubexport's exports: pass "
                "--overwrite_any_saved_model to replace it, or choose another directory")
    return (f"{shown} {describe_contents(output, entries)}; hubexport replaces only a "
            "SavedModel directory, never other files: choose another directory")


def written_by_hubexport(directory):
    """A SavedModel directory with hubexport's provenance file (a JSON object)."""
    info = read_provenance(directory)
    return (os.path.isfile(os.path.join(directory, "saved_model.pb"))
            and isinstance(info, dict)
            and str(info.get("format", "")).startswith("hubexport-provenance/"))


def is_saved_model(directory):
    """saved_model.pb and variables/: what tf.saved_model.save writes."""
    return (os.path.isfile(os.path.join(directory, "saved_model.pb"))
            and os.path.isdir(os.path.join(directory, "variables")))


_LISTED = 5  # Entries a refusal names; the rest are counted.


def describe_contents(directory, entries):
    """"holds 3 entries and no saved_model.pb: README.md, src/, x.py"."""
    names = [f"{e}/" if os.path.isdir(os.path.join(directory, e)) else e for e in entries]
    missing = ("no saved_model.pb" if "saved_model.pb" not in entries
               else "saved_model.pb but no variables/")
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    count = f"{len(names)} {'entry' if len(names) == 1 else 'entries'}"
    return f"holds {count} and {missing}: {', '.join(names[:_LISTED])}{more}"


def check_writable_parent(output, flag="--output"):
    """Refuses an output whose nearest existing ancestor cannot be written.

    Tried for real (a directory made and removed there): permissions, a
    read-only mount and ACLs all answer. Done before the model is built, so the
    error names the user's path, not the staging directory beside it.
    """
    ancestor = os.path.dirname(output)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UserError(f"{flag}={output} cannot be written: {ancestor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hubexport-probe-", dir=ancestor))
    except OSError as e:
        raise UserError(
            f"{flag}={output} cannot be written: {ancestor} is not writable "
            f"({e.strerror}); choose a directory you can write to") from None


def _save(built, plan, directory):
    """Saves the reusable SavedModel; returns the reference trace (see verify)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    from hubexport import reusable

    height, width = built.input_hw
    # A tf.function traced outside a save context is traced again inside one
    # (the context's variable policy is part of the cache key), so the model
    # is traced where tf.saved_model.save will look for the traces. Custom
    # gradients (swish in EfficientNet, ...) must be saved, or the reloaded
    # model cannot be differentiated; `hubexport check` found that.
    options = tf.saved_model.SaveOptions()
    with tempfile.TemporaryDirectory() as scratch:
        extras = reusable.Extras(
            serving_size=built.size,
            labels=plan.labels,
            top_k=plan.top_k,
            activation=built.activation or "softmax",
            batch_norm_momentum=built.batch_norm_momentum,
            labels_path=labels_lib.write(plan.labels, scratch) if plan.labels else None,
        )
        with save_context.save_context(options):
            root, signatures, reference = reusable.make_root(
                built.model, plan.preprocessing, plan.task, height, width, extras,
                jit_compile=plan.jit_compile,
            )
        # A Keras application's only custom gradients are TensorFlow's own.
        with _tensors_compared_by_identity(plan.architecture is not None):
            tf.saved_model.save(root, directory, signatures=signatures, options=options)
    return reference


@contextlib.contextmanager
def _tensors_compared_by_identity(enabled):
    """Tensor == is `is` while the block runs (when enabled), as in TF1.

    tf.saved_model.save finds each custom gradient's captures (every swish of
    an EfficientNet) with list.index, and each comparison is a Tensor.__eq__
    that walks TensorFlow's context stack before it settles on identity:
    quadratic (EfficientNetB3's export at 32x32 0.84x with this switch,
    benchmarks/check_time.py --compare=identity_eq; BUILD_NOTES.md). The
    answers, and so the files, are the same either way. But the save also
    traces each custom gradient function from the eager context, where == is
    elementwise: only code known not to compare tensors may run under this
    (tf.nn.silu's gradient in Keras applications), so own models are saved
    with TensorFlow's default.
    """
    if not enabled:
        yield
        return
    import tensorflow as tf
    from tensorflow.python.framework import tensor as tensor_lib

    was_elementwise = tensor_lib.Tensor._USE_EQUALITY
    tf.compat.v1.disable_tensor_equality()
    try:
        yield
    finally:
        if was_elementwise:
            tf.compat.v1.enable_tensor_equality()


def _load(directory):
    import tensorflow as tf

    return tf.saved_model.load(directory)


def verify(loaded, reference, plan, built, seed=0):
    """Compares every endpoint of the reloaded export with the Keras model.

    The reference is what a Keras user computes by hand:
    model(keras.applications.<module>.preprocess_input(255 * images)), with the
    model traced as a graph (`reference`, the trace the export calls):
    eager and graph execution fuse ops differently, and deep randomly
    initialized networks (EfficientNetV2L at 32x32) amplify that rounding to
    O(1) differences. An own model is also compared as it was saved (with the
    activation the export removed, applied again to the export's logits).
    The top_k and raw-image signatures are compared with __call__ on the same
    images. Returns the largest relative difference; raises VerificationError
    above TOLERANCE.
    """
    import numpy as np
    import tensorflow as tf

    from hubexport import reusable, serving

    height, width = built.size
    pixels = np.random.default_rng(seed).integers(
        0, 256, (_VERIFY_BATCH, height, width, 3), dtype=np.uint8)
    images = pixels.astype("float32") / 255.0
    source = plan.architecture or plan.keras_model
    reference_input = tf.constant(source.reference_preprocess_input()(255.0 * images))
    expected = reference(reference_input).numpy()
    if expected.shape != (_VERIFY_BATCH, built.output_size):
        raise VerificationError(
            f"{plan.describe()} gives outputs of shape {expected.shape}; "
            f"expected {(_VERIFY_BATCH, built.output_size)}"
        )
    if plan.architecture and not plan.feature_layer:
        table = (_VERIFY_BATCH, plan.architecture.output_size(plan.task))
        if expected.shape != table:
            raise VerificationError(
                f"{plan.describe()} gives outputs of shape {expected.shape}, "
                f"the architecture table says {table}"
            )

    key = reusable.OUTPUT_KEYS[plan.task]
    call_output = loaded(images)
    comparisons = {
        "__call__": (call_output, expected),
        "serve": (loaded.serve(images), expected),
        "serving_default": (
            loaded.signatures["serving_default"](images=tf.constant(images))[key], expected),
    }
    if built.as_saved is not None:
        as_saved = built.as_saved(reference_input).numpy()
        activated = call_output
        if built.activation and plan.keras_model:
            activated = serving.ACTIVATIONS[built.activation](call_output)
        comparisons["__call__ vs. the model as saved"] = (activated, as_saved)
    signatures = loaded.signatures
    if serving.UINT8_SIGNATURE in signatures:
        # The raw-image signatures answer as __call__ does on the same photo
        # converted and resized (at the export's size, exactly the images).
        resized = np.asarray(serving.resize(tf.constant(pixels), built.size))
        # At the export's own size the resize is the identity, bit for bit:
        # __call__ already answered on these images (one forward pass less).
        as_photo = (np.asarray(call_output) if np.array_equal(resized, images)
                    else np.asarray(loaded(resized)))
        encoded = tf.stack([tf.io.encode_png(p) for p in pixels])
        for name, result in (
            (serving.UINT8_SIGNATURE, signatures[serving.UINT8_SIGNATURE](images=tf.constant(pixels))),
            (serving.BYTES_SIGNATURE, signatures[serving.BYTES_SIGNATURE](image_bytes=encoded)),
        ):
            comparisons[name] = (result[key], as_photo)
    worst = 0.0
    for endpoint, (actual, wanted) in comparisons.items():
        actual = np.asarray(actual)
        if actual.shape != wanted.shape or actual.dtype != np.float32:
            raise VerificationError(
                f"{endpoint} of the SavedModel gives {actual.dtype} "
                f"{actual.shape}; expected float32 {wanted.shape}"
            )
        difference = relative_difference(actual, wanted)
        if not difference <= TOLERANCE:
            xla = (" (XLA reorders float math, and deep randomly initialized networks "
                   "amplify that: EfficientNetV2L and ResNetRS200 at 32x32 differ by "
                   "O(0.1-1); export without --jit_compile)" if plan.jit_compile else "")
            raise VerificationError(
                f"{endpoint} of the SavedModel differs from the Keras model by "
                f"{difference:.2e} (relative), more than {TOLERANCE:.0e}{xla}"
            )
        worst = max(worst, difference)
    if plan.labels:
        _verify_top_k(loaded, images, np.asarray(call_output), plan, built)
    return worst


def _verify_top_k(loaded, images, logits, plan, built):
    """top_k gives the labels and confidences of the k largest logits."""
    from hubexport import serving

    result = loaded.signatures[serving.TOP_K_SIGNATURE](images=images)
    confidences, names = result["confidences"].numpy(), result["labels"].numpy()
    if confidences.shape != (len(logits), plan.top_k) or names.shape != confidences.shape:
        raise VerificationError(
            f"top_k returns labels {names.shape} and confidences {confidences.shape}; "
            f"expected {(len(logits), plan.top_k)}")
    mismatch = serving.top_k_mismatch(logits, plan.labels, built.activation, confidences, names)
    if mismatch == "confidences":
        raise VerificationError(
            f"top_k confidences differ from the {built.activation} of the logits")
    if mismatch == "labels":
        raise VerificationError("top_k labels do not name the classes of the largest logits")


def relative_difference(actual, expected):
    """max |actual - expected| / max |expected| (0 when both are all zero)."""
    import numpy as np

    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale


def provenance(plan, built, difference):
    import importlib

    import tensorflow as tf

    import hubexport
    from hubexport import serving

    arch = plan.architecture
    library = arch.library if arch else "keras"
    height, width = built.input_hw
    signatures = ["serving_default"]
    if plan.labels:
        signatures.append(serving.TOP_K_SIGNATURE)
    signatures += [serving.BYTES_SIGNATURE, serving.UINT8_SIGNATURE]
    return {
        "format": "hubexport-provenance/1",
        "architecture": arch.name if arch else None,
        "source": {
            "kind": "architecture" if arch else "keras_model",
            "path": plan.keras_model.path if plan.keras_model else None,
            "sha256": plan.keras_model.sha256 if plan.keras_model else None,
        },
        "task": plan.task,
        "image_size": built.size[0] if built.size[0] == built.size[1] else list(built.size),
        "input": {
            "dtype": "float32",
            "shape": [None, height, width, 3],
            "range": [0.0, 1.0],
            "channels": "RGB",
            "min_size": arch.min_size if arch else None,
            "size_is_free": height is None,
        },
        "preprocessing": plan.preprocessing,
        "feature_layer": plan.feature_layer,
        "pooling": plan.pooling if plan.task == "feature_vector" else None,
        "output": _output_description(plan, built),
        "labels": {"count": len(plan.labels), "file": labels_lib.ASSET_PATH}
        if plan.labels else None,
        "multi_label": built.activation == "sigmoid",
        "top_k": plan.top_k if plan.labels else None,
        "signatures": signatures,
        "serving_size": list(built.size),
        "batch_norm_momentum": built.batch_norm_momentum,
        "jit_compile": plan.jit_compile,
        "weights": {
            "source": plan.weights.source,
            "path": plan.weights.path,
            "sha256": plan.weights.sha256,
        },
        "request_key": request_key(plan),
        "verification": {
            "max_relative_difference": difference,
            "tolerance": TOLERANCE,
        },
        "versions": {
            "hubexport": hubexport.__version__,
            "tensorflow": tf.__version__,
            library: importlib.import_module(library).__version__,
            "python": platform.python_version(),
        },
    }


def request_key(plan):
    """A hash of what an export is made from: the plan (files by content) and
    the versions of hubexport and the libraries that build and trace it.

    Recorded in the provenance; export_all does not redo a model whose output
    has the same key.
    """
    import hashlib
    from importlib import metadata

    import hubexport

    request = dataclasses.asdict(plan)
    request["weights"].pop("path")
    if request["keras_model"]:
        request["keras_model"].pop("path")
    versions = {"hubexport": hubexport.__version__}
    for distribution in ("tensorflow", "keras", "tf-keras"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    text = json.dumps({"plan": request, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _output_description(plan, built):
    if plan.task == "feature_vector":
        where = f"layer {plan.feature_layer}" if plan.feature_layer else "the last feature map"
        return {
            "key": "feature_vector",
            "size": built.output_size,
            "meaning": f"global {'average' if plan.pooling == 'avg' else 'max'} pool of {where}",
        }
    if plan.labels:
        classes = f"the {built.output_size} classes of {labels_lib.ASSET_PATH}"
    elif plan.architecture:
        classes = ("the 1000 ImageNet classes, in Keras' class order "
                   "(keras.applications.imagenet_utils.decode_predictions)")
    else:
        classes = f"{built.output_size} classes"
    independent = built.activation == "sigmoid"
    return {
        "key": "logits",
        "size": built.output_size,
        "meaning": f"logits (before {built.activation}) over {classes}"
        + ("; each class is independent (multi-label)" if independent else ""),
        "activation": built.activation,
    }


def _write_provenance(directory, plan, built, difference):
    """assets.extra/hubexport.json, and the model card made from it."""
    from hubexport import model_card

    info = provenance(plan, built, difference)
    path = os.path.join(directory, PROVENANCE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    model_card.write(directory, info)


def read_provenance(directory):
    """hubexport's description of an export, or None if there is none."""
    path = os.path.join(directory, PROVENANCE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _chmod_like_mkdir(directory):
    """mkdtemp makes 0700 directories; an export should get the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)


def _install(staging, output, overwrite=False, overwrite_any_saved_model=False, inputs=()):
    """Moves `staging` to `output`; an existing output survives any failure.

    The output is checked again first (check_output): it may have appeared or
    changed during the export. An existing one is moved aside (one rename),
    the export moved in (another), and only then the old one deleted; if the
    second rename fails, the first is undone, and the empty retired directory
    removed. (Deleting first would lose the old export to a failed rename.)
    """
    check_output(output, overwrite, overwrite_any_saved_model, inputs)
    if not os.path.lexists(output):
        os.rename(staging, output)
        return
    parent = os.path.dirname(output)
    retired = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-", dir=parent)
    old = os.path.join(retired, "model")
    try:
        os.rename(output, old)
        try:
            os.rename(staging, output)
        except BaseException:
            os.rename(old, output)
            raise
    except BaseException:
        with contextlib.suppress(OSError):  # Not empty: the old export could not go back.
            os.rmdir(retired)
        raise
    shutil.rmtree(retired, ignore_errors=True)

