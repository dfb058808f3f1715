"""Class labels: read from --labels=FILE, stored in the export as assets/labels.txt.

One label per line; line i (from 0) names class index i. A final newline is
optional; blank lines and surrounding whitespace are refused, because they
shift or hide classes. Duplicates are allowed (ImageNet has two "crane"s).

--labels=imagenet (the keyword, any case; `./imagenet` names a file) takes
the 1000 names from Keras' own imagenet_class_index.json, the file
keras.applications.imagenet_utils.decode_predictions reads: same URL, same
cache ($KERAS_HOME/models or ~/.keras/models), same name and hash, fetched
with keras.utils.get_file, so whoever ran decode_predictions already has it.
Class i is named by the file's entry i, e.g. "Indian_elephant".
"""

import hashlib
import json
import os
import sys

from hubexport.architectures import IMAGENET_CLASSES
from hubexport.contract import LABELS_FILE

ASSET_NAME = os.path.basename(LABELS_FILE)  # labels.txt; the export's is LABELS_FILE.
IMAGENET = "imagenet"  # The --labels keyword.
# As in keras/src/applications/imagenet_utils.py (decode_predictions).
IMAGENET_INDEX_FILE = "imagenet_class_index.json"
IMAGENET_INDEX_URL = ("https://storage.googleapis.com/download.tensorflow.org/"
                      "data/imagenet_class_index.json")
IMAGENET_INDEX_HASH = "c2c37ea517e94d9795004a39431a14cb"  # md5, get_file's file_hash.
IMAGENET_INDEX_SUBDIR = "models"


def is_imagenet(spec):
    """Whether the --labels value is the imagenet keyword (not a file path)."""
    return isinstance(spec, str) and spec.lower() == IMAGENET


def source_file(spec):
    """The file a --labels value reads: Keras' cached class index for the imagenet
    keyword (an output must not be or hold it either), else the value itself."""
    return os.path.join(_models_dir(), IMAGENET_INDEX_FILE) if is_imagenet(spec) else spec


def imagenet():
    """The 1000 ImageNet class names in Keras' class order, as a tuple.

    A cached file whose md5 matches is read without importing Keras (so a
    plan stays free of TensorFlow, as get_file would not download it either);
    otherwise keras.utils.get_file fetches it into Keras' cache. UserError,
    naming the file, the URL and where to put it, if that fails.
    """
    path = source_file(IMAGENET)
    if not (os.path.isfile(path) and _md5(path) == IMAGENET_INDEX_HASH):
        path = _fetch_imagenet_index()
    return _read_imagenet_index(path)


def _keras_home():
    """Keras' cache directory, as get_file picks it when cache_dir is None.

    Keras reads KERAS_HOME when it is imported; before that, the same rule
    (hubexport.weights) gives what it will pick.
    """
    config = sys.modules.get("keras.src.backend.config")
    if config is not None:
        return config.keras_home()
    from hubexport import weights

    return weights._keras_home("keras")


def _models_dir():
    # get_file's own fallback: an unwritable cache directory means /tmp/.keras.
    base = os.path.expanduser(_keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, IMAGENET_INDEX_SUBDIR)


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def _fetch_imagenet_index():
    """keras.utils.get_file called as decode_predictions calls it; the path."""
    from hubexport import startup
    from hubexport.errors import UserError, summarize

    startup.quiet_tensorflow()
    import keras

    try:
        return keras.utils.get_file(
            IMAGENET_INDEX_FILE, IMAGENET_INDEX_URL, cache_subdir=IMAGENET_INDEX_SUBDIR,
            file_hash=IMAGENET_INDEX_HASH, cache_dir=_keras_home())
    except Exception as e:  # get_file raises a bare Exception offline, ValueError on a bad hash.
        reason = summarize(e).split(" -- ")[-1].strip()
        target = os.path.join(_models_dir(), IMAGENET_INDEX_FILE)
        raise UserError(
            f"--labels=imagenet: could not download Keras' ImageNet class names "
            f"({IMAGENET_INDEX_FILE} from {IMAGENET_INDEX_URL}): {reason}. Download that "
            f"file elsewhere and put it at {target}, or pass --labels=FILE"
        ) from None


def _read_imagenet_index(path):
    """The names of imagenet_class_index.json ({"0": [wnid, name], ...})."""
    from hubexport.errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        names = tuple(index[str(i)][1] for i in range(IMAGENET_CLASSES))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(
            f"--labels=imagenet: {path} is not Keras' ImageNet class index ({e!r}); "
            f"delete it to fetch it again from {IMAGENET_INDEX_URL}"
        ) from None
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or n != n.strip()
           or "\n" in n]
    if bad or len(index) != IMAGENET_CLASSES:
        raise UserError(
            f"--labels=imagenet: {path} is not Keras' ImageNet class index (it needs "
            f"{IMAGENET_CLASSES} entries, each [wnid, name]); delete it to fetch it again "
            f"from {IMAGENET_INDEX_URL}"
        )
    return names


def read(path):
    """The labels in the file `path`, as a tuple; UserError if malformed."""
    from hubexport.errors import UserError

    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"--labels={path}: no such file; pass a text file with one label per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--labels={path} is not a readable UTF-8 text file: {e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UserError(f"--labels={path} is empty; it needs one label per line, one per class")
    for number, line in enumerate(lines, 1):
        if not line.strip() or line != line.strip():
            problem = "is blank" if not line.strip() else "has leading or trailing whitespace"
            raise UserError(
                f"--labels={path}: line {number} {problem}; each line must be the "
                "label of one class (line 1 is class 0)"
            )
    return tuple(lines)


def write(labels, directory):
    """Writes `labels` as directory/labels.txt; returns its path."""
    path = os.path.join(directory, ASSET_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in labels))
    return path


def check_count(labels, num_classes, source):
    """UserError unless there is one label per class."""
    from hubexport.errors import UserError

    if labels is not None and len(labels) != num_classes:
        raise UserError(
            f"--labels has {len(labels)} labels but {source} has {num_classes} "
            f"classes; pass a file with exactly {num_classes} lines (line 1 is class 0)"
        )
