"""Where the weights of an export come from: ImageNet, none, or a file.

  imagenet  Keras downloads and caches the file itself (~/.keras/models, or
            $KERAS_HOME/models). Offline, that fails; we say which file Keras
            wanted and where to put it.
  none      random initialization (tests, and training from scratch).
  PATH      a file written by `model.save_weights` from the same application:
            Keras 3 `.weights.h5`, or a Keras 2 / tf_keras `.h5`. For the feature
            vector, a file saved from the full model (with its classifier) or
            from the topless model both work: layers are matched by name.
"""

import dataclasses
import hashlib
import os
import re
import warnings

from hubexport.errors import UserError, summarize

_SUFFIXES = (".weights.h5", ".h5")


@dataclasses.dataclass(frozen=True)
class Weights:
    source: str  # "imagenet", "none" or "file"
    path: str | None = None
    sha256: str | None = None

    @property
    def keras_argument(self):
        """The `weights=` argument for the Keras constructor."""
        return "imagenet" if self.source == "imagenet" else None

    def describe(self):
        return self.path if self.source == "file" else self.source


def parse(spec):
    """Parses the --weights value: imagenet, none, or a path to a file."""
    if spec is None or spec.lower() in ("none", ""):
        return Weights("none")
    if spec.lower() == "imagenet":
        return Weights("imagenet")
    path = os.path.abspath(os.path.expanduser(spec))
    if not path.endswith(_SUFFIXES):
        raise UserError(
            f"--weights={spec} is not a weights file; allowed: imagenet, none, "
            "or a path ending in .weights.h5 (Keras 3 save_weights) or .h5 "
            "(Keras 2 save_weights)"
        )
    if not os.path.isfile(path):
        raise UserError(
            f"--weights={spec}: no such file; pass an existing file written by "
            "model.save_weights, or --weights=imagenet or --weights=none"
        )
    check_hdf5("weights", spec, path)
    return Weights("file", path, sha256_of(path))


def check_hdf5(flag, spec, path):
    """Refuses a file that is not a whole HDF5 file, before Keras reads it.

    Keras reports a truncated weights file as one that "does not match" the
    model, and a truncated .h5 model as "File not found"; h5py says what it is
    (its superblock gives the size the file should have). h5py imports without
    TensorFlow, so this is instant.
    """
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        raise UserError(
            f"--{flag}={spec} is truncated or not an HDF5 file: {summarize(e)}; pass the "
            "whole file that Keras wrote (a partial download or copy is shorter)"
        ) from None


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(model, weights, describe_model):
    """Loads a weights file into `model`; UserError if it does not match."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if weights.path.endswith(".weights.h5"):
                model.load_weights(weights.path)
            else:
                _check_legacy_h5_covers(model, weights.path)
                model.load_weights(weights.path, by_name=True)
    except UserError:
        raise
    except Exception as e:  # Keras raises ValueError, h5py OSError/KeyError.
        raise UserError(
            f"--weights={weights.path} does not match {describe_model}: "
            f"{summarize(e)}. Pass a file saved with model.save_weights from "
            "the same architecture (and, for classification, the same size)"
        ) from None


def _check_legacy_h5_covers(model, path):
    """Keras' by-name loading skips layers missing from the file: refuse that."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = {
            n.decode() if isinstance(n, bytes) else n
            for n in group.attrs.get("layer_names", [])
        }
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in names]
    if missing:
        raise UserError(
            f"--weights={path} has no weights for {len(missing)} layers of the "
            f"model (first: {missing[0]}); pass a file saved from the same "
            "architecture"
        )


def offline_error(architecture, error, library="keras"):
    """A UserError for a failed ImageNet download, or None if it was not one."""
    text = str(error)
    match = re.search(r"URL fetch failure on (\S+): ", text)
    if not match:
        return None
    url = match.group(1)
    fname = url.rsplit("/", 1)[-1]
    cache = os.path.join(_keras_home(library), "models", fname)
    return UserError(
        f"Could not download the ImageNet weights of {architecture} "
        f"({fname} from {url}): {text.split(' -- ')[-1].strip()}. "
        f"Download that file elsewhere and put it at {cache}, "
        "or pass --weights=none or --weights=PATH"
    )


def _keras_home(library="keras"):
    # Where get_file caches: Keras 3 keras.src.backend.config.keras_home;
    # tf_keras ignores KERAS_HOME: ~/.keras, or /tmp/.keras if not writable.
    if library == "tf_keras":
        base = os.path.expanduser(os.path.join("~", ".keras"))
        return base if os.access(base, os.W_OK) else os.path.join("/tmp", ".keras")
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")
