"""Files written whole or not at all; no TensorFlow.

    with atomic.replacing(path) as f:   # `path` changes only when the block ends
        f.write(...)
    atomic.write_json(path, data)
    with atomic.staging_beside(output) as staging:   # a directory written beside it
        ...
        atomic.replace_directory(staging, output)
    atomic.clean_up_beside(output)   # what a killed process left beside it

What is written goes to a new file beside `path` (.NAME.partial-XXXX, the
umask's mode) and is moved onto it (os.replace, atomic on one file system)
once complete: a reader, or a run that was killed, sees the old file or the
whole new one, never part of one. After an exception the partial file is
removed and `path` is as it was. A process that was interrupted (SIGTERM,
Ctrl-C: hubexport.startup) installs nothing, even if a library swallowed the
KeyboardInterrupt.
"""

import contextlib
import json
import os
import shutil
import tempfile

from hubexport import startup


@contextlib.contextmanager
def replacing(path, mode="w", *, durable=False, before_replace=None):
    """A file opened with `mode` whose contents replace `path` when the block ends.

    durable: fsync the file before it is moved (an archive someone uploads).
    before_replace(): called once the file is complete, just before the move;
      what it raises (e.g. the output changed meanwhile) cancels the write.
    """
    fd, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.partial-",
                                   dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        _chmod_like_open(partial)
        startup.raise_if_interrupted()
        if before_replace is not None:
            before_replace()
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise


def _chmod_like_open(path):
    """mkstemp makes 0600 files; what replaces `path` gets the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json(path, data, indent=1):
    """`data` as JSON (and a final newline) in place of `path`."""
    with replacing(path) as f:
        json.dump(data, f, indent=indent)
        f.write("\n")


def replace_directory(staging, output):
    """Moves the directory `staging` to `output`; an existing output survives any failure.

    An existing output is moved aside (one rename), `staging` moved in
    (another), and only then the old one deleted; if the second rename fails,
    the first is undone and the empty retired directory removed. (Deleting
    first would lose the old one to a failed rename.) Killed between the two
    renames, the old one is left at .NAME.old-XXXX/model beside `output`
    (clean_up_beside moves it back).
    """
    startup.raise_if_interrupted()
    if not os.path.lexists(output):
        os.rename(staging, output)
        return
    retired = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-",
                               dir=os.path.dirname(output))
    old = os.path.join(retired, "model")
    try:
        os.rename(output, old)
        try:
            os.rename(staging, output)
        except BaseException:
            os.rename(old, output)
            raise
    except BaseException:
        with contextlib.suppress(OSError):  # Not empty: the old one could not go back.
            os.rmdir(retired)
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def staging_beside(output):
    """A new directory beside `output` (.NAME.partial-XXXX, the umask's mode), removed
    if the block fails; the block moves it into place (replace_directory)."""
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        _chmod_like_mkdir(staging)
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _chmod_like_mkdir(directory):
    """mkdtemp makes 0700 directories; an output should get the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)


def clean_up_beside(output):
    """What a process killed while writing `output` left beside it: a retired
    directory whose replacement never arrived (killed between replace_directory's
    two renames) is moved back; staging and retired directories are removed."""
    parent, name = os.path.split(output)
    if not os.path.isdir(parent):
        return
    for entry in sorted(os.listdir(parent)):
        path = os.path.join(parent, entry)
        if entry.startswith(f".{name}.old-") and not os.path.lexists(output):
            with contextlib.suppress(FileNotFoundError):
                os.rename(os.path.join(path, "model"), output)
        if entry.startswith((f".{name}.partial-", f".{name}.old-")):
            shutil.rmtree(path, ignore_errors=True)
