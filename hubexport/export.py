"""Exports a Keras application as a reusable image SavedModel.

    plan = export.plan("MobileNetV2", "feature_vector", image_size=224,
                       weights="none")
    export.export(plan, "/tmp/mobilenet_v2", overwrite=False)

The SavedModel is written to a temporary directory beside the output, reloaded
and compared with the source Keras model on the same input, and only then moved
into place. A failure or an interrupt removes the temporary directory and leaves
an existing output untouched.
"""

import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
import warnings

from hubexport import architectures, grappler
from hubexport import weights as weights_lib
from hubexport.errors import UserError, summarize

PROVENANCE_FILE = os.path.join("assets.extra", "hubexport.json")
TOLERANCE = 1e-4  # Relative to the largest magnitude of the reference output.
_VERIFY_BATCH = 2


class VerificationError(RuntimeError):
    """The reloaded SavedModel does not compute what the Keras model computes."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated export request; building it does not import TensorFlow."""

    architecture: architectures.Architecture
    task: str
    image_size: int
    weights: weights_lib.Weights

    @property
    def input_hw(self):
        return self.architecture.input_hw(self.task, self.image_size)

    def describe(self):
        return (
            f"{self.architecture.name} {self.task} at "
            f"{self.image_size}x{self.image_size}"
        )


@dataclasses.dataclass(frozen=True)
class Result:
    path: str
    seconds: float
    max_relative_difference: float


def plan(architecture, task, image_size=None, weights="imagenet"):
    """Validates a request; raises UserError with the fix if it is refused."""
    arch = architectures.lookup(architecture)
    architectures.check_task(task)
    if image_size is None:
        image_size = arch.default_size
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise UserError(
            f"image_size must be a whole number of pixels; received {image_size!r}"
        )
    parsed = weights_lib.parse(weights)
    problem = arch.size_problem(task, image_size, parsed.source == "imagenet")
    if problem:
        raise UserError(problem)
    return Plan(arch, task, image_size, parsed)


def build_model(plan, log=lambda message: None):
    """The Keras 3 model behind the export: topless+avg pool, or logits."""
    # Fresh layer names, so weights files match by name however many models
    # this process has built before.
    plan.architecture.keras_module().backend.clear_session()
    height, width = plan.input_hw
    kwargs = dict(weights=plan.weights.keras_argument, input_shape=(height, width, 3))
    if plan.task == "feature_vector":
        kwargs.update(include_top=False, pooling="avg")
    else:
        kwargs.update(include_top=True, classifier_activation=None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = plan.architecture.constructor()(**kwargs)
        for warning in caught:
            log(f"note from Keras: {warning.message}")
    except Exception as e:
        offline = weights_lib.offline_error(plan.architecture.name, e)
        if offline:
            raise offline from None
        if isinstance(e, ValueError):
            raise UserError(
                f"Keras refuses {plan.describe()}: "
                f"{summarize(e)}"
            ) from None
        raise
    if plan.weights.source == "file":
        weights_lib.load_file(model, plan.weights, plan.describe())
    return model


def export(plan, output, overwrite=False, log=lambda message: None):
    """Exports `plan` to the directory `output`; returns a Result."""
    output = os.path.abspath(os.path.expanduser(output))
    _check_output(output, overwrite)
    start = time.monotonic()

    log(f"Building {plan.describe()} (weights: {plan.weights.describe()})")
    model = build_model(plan, log)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        _chmod_like_mkdir(staging)
        log("Tracing and saving")
        reference = _save(model, plan, staging)
        log("Reloading and comparing with the Keras model")
        with grappler.disabled():
            difference = verify(staging, reference, plan)
        _write_provenance(staging, plan, difference)
        _install(staging, output, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    log(f"Wrote {output} ({seconds:.1f}s, max relative difference {difference:.1e})")
    return Result(output, seconds, difference)


def _check_output(output, overwrite):
    if os.path.exists(output) and not overwrite:
        raise UserError(
            f"--output={output} already exists; pass --overwrite to replace it, "
            "or choose another directory"
        )
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"--output={output} is a file; pass a directory path")


def _save(model, plan, directory):
    """Saves the reusable SavedModel; returns the reference trace (see verify)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    from hubexport import reusable

    height, width = plan.input_hw
    # A tf.function traced outside a save context is traced again inside one
    # (the context's variable policy is part of the cache key), so the model
    # is traced where tf.saved_model.save will look for the traces. Custom
    # gradients (swish in EfficientNet, ...) must be saved, or the reloaded
    # model cannot be differentiated; `hubexport check` found that.
    options = tf.saved_model.SaveOptions()
    with save_context.save_context(options):
        root, signatures, reference = reusable.make_root(
            model, plan.architecture.preprocessing, plan.task, height, width
        )
    tf.saved_model.save(root, directory, signatures=signatures, options=options)
    return reference


def verify(directory, reference, plan, seed=0):
    """Reloads `directory` and compares every endpoint with the Keras model.

    The reference is what a Keras user computes by hand:
    model(keras.applications.<module>.preprocess_input(255 * images)), with the
    model traced as a graph (`reference`, the trace the export calls):
    eager and graph execution fuse ops differently, and deep randomly
    initialized networks (EfficientNetV2L at 32x32) amplify that rounding to
    O(1) differences. Returns the largest relative difference; raises
    VerificationError above TOLERANCE.
    """
    import numpy as np
    import tensorflow as tf

    from hubexport import reusable

    size = plan.image_size
    images = np.random.default_rng(seed).uniform(
        0.0, 1.0, (_VERIFY_BATCH, size, size, 3)
    ).astype("float32")
    reference_input = plan.architecture.reference_preprocess_input()(255.0 * images)
    expected = reference(tf.constant(reference_input)).numpy()
    expected_shape = (_VERIFY_BATCH, plan.architecture.output_size(plan.task))
    if expected.shape != expected_shape:
        raise VerificationError(
            f"{plan.describe()} gives outputs of shape {expected.shape}, "
            f"the architecture table says {expected_shape}"
        )

    loaded = tf.saved_model.load(directory)
    key = reusable.OUTPUT_KEYS[plan.task]
    outputs = {
        "__call__": loaded(images),
        "serve": loaded.serve(images),
        "serving_default": loaded.signatures["serving_default"](
            images=tf.constant(images)
        )[key],
    }
    worst = 0.0
    for endpoint, actual in outputs.items():
        actual = np.asarray(actual)
        if actual.shape != expected.shape or actual.dtype != np.float32:
            raise VerificationError(
                f"{endpoint} of the SavedModel gives {actual.dtype} "
                f"{actual.shape}; expected float32 {expected.shape}"
            )
        difference = relative_difference(actual, expected)
        if not difference <= TOLERANCE:
            raise VerificationError(
                f"{endpoint} of the SavedModel differs from the Keras model by "
                f"{difference:.2e} (relative), more than {TOLERANCE:.0e}"
            )
        worst = max(worst, difference)
    return worst


def relative_difference(actual, expected):
    """max |actual - expected| / max |expected| (0 when both are all zero)."""
    import numpy as np

    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale


def provenance(plan, difference):
    import keras
    import tensorflow as tf

    import hubexport

    arch = plan.architecture
    height, width = plan.input_hw
    return {
        "format": "hubexport-provenance/1",
        "architecture": arch.name,
        "task": plan.task,
        "image_size": plan.image_size,
        "input": {
            "dtype": "float32",
            "shape": [None, height, width, 3],
            "range": [0.0, 1.0],
            "channels": "RGB",
            "min_size": arch.min_size,
            "size_is_free": height is None,
        },
        "preprocessing": arch.preprocessing,
        "output": _output_description(plan),
        "weights": {
            "source": plan.weights.source,
            "path": plan.weights.path,
            "sha256": plan.weights.sha256,
        },
        "verification": {
            "max_relative_difference": difference,
            "tolerance": TOLERANCE,
        },
        "versions": {
            "hubexport": hubexport.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
    }


def _output_description(plan):
    if plan.task == "feature_vector":
        return {
            "key": "feature_vector",
            "size": plan.architecture.num_features,
            "meaning": "global average pool of the last feature map",
        }
    return {
        "key": "logits",
        "size": architectures.IMAGENET_CLASSES,
        "meaning": "logits (before softmax) over the 1000 ImageNet classes, "
        "in Keras' class order (keras.applications.imagenet_utils."
        "decode_predictions)",
        "activation": "softmax",
    }


def _write_provenance(directory, plan, difference):
    path = os.path.join(directory, PROVENANCE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(provenance(plan, difference), f, indent=2)
        f.write("\n")


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


def _install(staging, output, overwrite):
    """Moves `staging` to `output`; an existing output survives any failure."""
    if not os.path.exists(output):
        os.rename(staging, output)
        return
    if not overwrite:  # Appeared while we were exporting.
        raise UserError(f"--output={output} already exists; pass --overwrite")
    parent = os.path.dirname(output)
    retired = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-", dir=parent)
    os.rename(output, os.path.join(retired, "model"))
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(os.path.join(retired, "model"), output)
        raise
    shutil.rmtree(retired, ignore_errors=True)

