"""Export configs: TOML files of data only, one per model we publish.

    architecture = "MobileNetV2"
    task = "feature_vector"
    image_size = 224
    weights = "imagenet"
"""

import os
import tomllib

from hubexport.errors import UserError

KEYS = {
    "architecture": str,
    "keras_model": str,
    "task": str,
    "image_size": int,
    "weights": str,
    "preprocessing": str,
    "custom_objects": str,
    "labels": str,
    "top_k": int,
    "multi_label": bool,
    "feature_layer": str,
    "pooling": str,
    "jit_compile": bool,
}
REQUIRED = ("task",)
PATHS = ("keras_model", "labels", "weights")  # Relative to the config's directory.


def load(path):
    """The config at `path` as a dict; UserError on anything malformed."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"--config={path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"--config={path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UserError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(KEYS)}"
        )
    for key, value in data.items():
        expected = KEYS[key]
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise UserError(
                f"{path}: {key} must be a {expected.__name__}; "
                f"received {value!r}"
            )
    missing = [key for key in REQUIRED if key not in data]
    if ("architecture" in data) == ("keras_model" in data):
        missing.insert(0, "architecture or keras_model (exactly one)")
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}; required: "
                        f"{', '.join(REQUIRED)} and one of architecture, keras_model")
    here = os.path.dirname(os.path.abspath(path))
    for key in PATHS:
        if key in data and not _is_keyword(key, data[key]):
            data[key] = os.path.join(here, os.path.expanduser(data[key]))
    return data


def _is_keyword(key, value):
    """Whether a path key holds a keyword instead (weights = "imagenet" or "none",
    labels = "imagenet"); "./imagenet" is a file beside the config."""
    keywords = {"weights": ("imagenet", "none"), "labels": ("imagenet",)}.get(key, ())
    return value.lower() in keywords


def catalog(config_dir):
    """Sorted (name, path) of the *.toml files in `config_dir`."""
    if not os.path.isdir(config_dir):
        raise UserError(f"--config_dir={config_dir} is not a directory")
    names = sorted(n for n in os.listdir(config_dir) if n.endswith(".toml"))
    if not names:
        raise UserError(f"--config_dir={config_dir} holds no .toml configs")
    return [(n[: -len(".toml")], os.path.join(config_dir, n)) for n in names]
