"""Files written whole or not at all; no TensorFlow.

    with atomic.replacing(path) as f:   # `path` changes only when the block ends
        f.write(...)
    atomic.write_json(path, data)

What is written goes to PATH.partial beside `path` and is moved onto it
(os.replace, atomic on one file system) once complete: a reader, or a run
that was killed, sees the old file or the whole new one, never part of one.
After an exception the partial file is removed and `path` is as it was.
"""

import contextlib
import json
import os


@contextlib.contextmanager
def replacing(path, mode="w"):
    """A file opened with `mode` whose contents replace `path` when the block ends."""
    partial = f"{path}.partial"
    try:
        with open(partial, mode) as f:
            yield f
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise


def write_json(path, data, indent=1):
    """`data` as JSON (and a final newline) in place of `path`."""
    with replacing(path) as f:
        json.dump(data, f, indent=indent)
        f.write("\n")
