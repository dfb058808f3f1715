"""A user's own Keras model as the source of an export.

    --keras_model=PATH --preprocessing=MODE [--custom_objects=MODULE]

PATH is a Keras 3 `.keras` file or a legacy Keras 2 `.h5` (both load with
`keras.saving.load_model`). MODE says what input the model was trained on (see
hubexport.preprocessing); the export takes [0, 1] images and applies it inside.
MODULE is an importable Python module whose public classes and functions are
the model's custom objects (layers, activations, losses).

A classifier whose last layer applies softmax or sigmoid is exported as logits:
the activation is removed (sigmoid means multi-label), and the verification
compares the export, with that activation applied again, against the model as
it was saved.

Parsing the flags does not import TensorFlow; loading does.
"""

import dataclasses
import importlib
import inspect
import os
import zipfile

from hubexport import names as names_lib
from hubexport import preprocessing as preprocessing_lib
from hubexport import weights as weights_lib
from hubexport.errors import UserError, summarize

SUFFIXES = (".keras", ".h5")
ACTIVATIONS = ("softmax", "sigmoid")  # Removed from a classifier's last layer.


@dataclasses.dataclass(frozen=True)
class OwnModel:
    path: str
    sha256: str
    preprocessing: str
    custom_objects: str | None = None  # A module name.

    @property
    def name(self):
        return os.path.basename(self.path)

    def reference_preprocess_input(self):
        """What a Keras user applies by hand to 0..255 RGB for this model."""
        from keras.applications import imagenet_utils

        mode = self.preprocessing
        if mode in ("caffe", "tf", "torch"):
            return lambda x: imagenet_utils.preprocess_input(x.copy(), mode=mode)
        if mode == "raw255":
            return lambda x: x
        return lambda x: x / 255.0


def parse(path, preprocessing, custom_objects=None):
    """Validates the flags of an own-model export (no TensorFlow)."""
    full = os.path.abspath(os.path.expanduser(path))
    if not full.endswith(SUFFIXES):
        raise UserError(
            f"--keras_model={path} is not a Keras model file; allowed: a .keras "
            "file (model.save in Keras 3) or a .h5 file (model.save in Keras 2)"
        )
    if not os.path.isfile(full):
        raise UserError(f"--keras_model={path}: no such file; pass an existing .keras or .h5 file")
    if full.endswith(".keras"):
        _check_keras_archive(path, full)
    else:
        weights_lib.check_hdf5("keras_model", path, full)
    if preprocessing not in preprocessing_lib.MODES:
        given = "is missing" if preprocessing is None else f"={preprocessing} is unknown"
        raise UserError(
            f"--preprocessing {given}; allowed: {', '.join(preprocessing_lib.MODES)} "
            "(what input the model was trained on: caffe/tf/torch as in "
            "keras.applications, raw255 for 0..255 RGB, unit for [0, 1] RGB)"
        )
    return OwnModel(full, weights_lib.sha256_of(full), preprocessing, custom_objects)


def _check_keras_archive(path, full):
    """Refuses a .keras file that is not the zip archive model.save writes.

    Keras 3 reads a file it cannot unzip as a legacy SavedModel directory and
    reports "File not found"; this says what the file is instead.
    """
    try:
        with zipfile.ZipFile(full) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        names, reason = None, summarize(e)
    else:
        reason = "it holds no config.json"
    if names is None or "config.json" not in names:
        raise UserError(
            f"--keras_model={path} is not a valid .keras file: {reason}; pass the whole "
            "file that model.save wrote in Keras 3 (a zip archive holding config.json)"
        )


def custom_objects(module_name):
    """The public classes and functions of `module_name`, by name."""
    if not module_name:
        return {}
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UserError(
            f"--custom_objects={module_name} does not import: {summarize(e)}; pass "
            "an importable module name (on PYTHONPATH) that defines the custom layers"
        ) from None
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }


def load(source):
    """The Keras 3 model saved at source.path."""
    import keras

    keras.backend.clear_session()
    try:
        return keras.saving.load_model(
            source.path, custom_objects=custom_objects(source.custom_objects),
            compile=False, safe_mode=True,
        )
    except UserError:
        raise
    except Exception as e:
        hint = (
            "pass --custom_objects=MODULE naming the module that defines them"
            if "custom" in str(e).lower() or "unknown" in str(e).lower()
            else "check that it was written by model.save"
        )
        raise UserError(
            f"--keras_model={source.path} does not load: {summarize(e)}; {hint}"
        ) from None


def activation_name(layer):
    """The name of the activation `layer` applies last, or None."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    function = getattr(layer, "activation", None)
    return getattr(function, "__name__", None) if function is not None else None


def without_activation(model):
    """(logits model, removed activation or None) for a classifier `model`.

    `model` is the caller's own freshly loaded copy: the last layer's
    activation is set to linear in place.
    """
    import keras

    last = model.layers[-1]
    name = activation_name(last)
    if name not in ACTIVATIONS:
        return model, None
    if isinstance(last, keras.layers.Softmax):
        return keras.Model(model.inputs, last.input, name=model.name), name
    last.activation = keras.activations.linear
    return model, name


def find_layer(model, name):
    """The layer `name` of `model`, or of a nested model applied to its input."""
    import keras

    for layer in model.layers:
        if layer.name == name:
            return model, layer
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(inner.name == name for inner in layer.layers):
            if _applied_to_input(model, layer):
                return layer, layer.get_layer(name)
    names = [layer.name for layer in model.layers]
    raise UserError(
        f"--feature_layer={name} is not a layer of the model; "
        f"{names_lib.did_you_mean(name, names)}"
        f"allowed: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''} "
        "(see model.summary())"
    )


def _applied_to_input(outer, inner):
    """Whether `inner` takes `outer`'s input as it is (a backbone up front)."""
    try:
        return inner.input is outer.input or (
            len(outer.layers) > 0 and outer.layers[0] is inner
        )
    except (AttributeError, ValueError):
        return False
