"""Packs a SavedModel directory into the .tar.gz archive tfhub.dev accepted.

    package.package("/tmp/mobilenet_v2")  # writes and returns /tmp/mobilenet_v2.tar.gz

The form comes from tfhub.dev's own rules:

  - "Write documentation", section "Model-specific asset content"
    (https://www.tensorflow.org/hub/writing_documentation, source: tensorflow/hub,
    docs/writing_documentation.md): a tar.gz with the SavedModel's files at its
    root (`cd my_model && tar -czvf ../model.tar.gz *`): saved_model.pb,
    variables/variables.index, variables/variables.data-?????-of-?????,
    optional assets/ and assets.extra/, keras_metadata.pb (only for Keras
    models) and tfhub_module.pb (only for TF1 models); every file and
    directory name starts with a word character.
  - The validator of every model submitted (tensorflow/tfhub.dev,
    tools/validator.py, ALLOWED_SAVED_MODEL_PATHS and PATH_PATTERN) refused any
    other file ("File cannot be used by SavedModel") and any name outside
    `[\\w-][-!',_\\w.=:% ]*`.

Decisions:

  - fingerprint.pb, which TensorFlow >= 2.12 writes into every SavedModel, is
    left out: it is not in the validator's allowed list, and TensorFlow loads
    a SavedModel without it (tensorflow/python/saved_model/load.py logs
    "Fingerprint not found. Saved model loading will continue.").
  - assets.extra/ goes in: both sources allow it, TensorFlow never reads it,
    and it carries hubexport.json and model_card.md with the model.
  - keras_metadata.pb goes in when present (both sources allow it); hubexport's
    own exports have none.
  - tfhub_module.pb (the obsolete TF1 Hub format, HUB_CONTRACT.md F1) and
    saved_model.pbtxt (which hubexport never writes, and which would compete
    with saved_model.pb) are refused like any other file.

The archive is deterministic: entries sorted, directories before their
contents, mtime 0, uid/gid 0 with empty owner and group names, mode 0644 for
files and 0755 for directories, and a gzip header without file name or time;
the same files give byte-identical archives (with the same zlib). It is
written to a temporary file beside the output and renamed into place, so a
failure or an interrupt leaves no partial archive and never destroys an
existing one.

An existing output is replaced only if hubexport wrote it: with `overwrite`,
an archive `package` wrote (a gzipped tar whose entries all carry the fixed
owners, modes and mtime 0 above, with allowed names, saved_model.pb among
them: a `tar -czf` of the user's gets real mtimes and owners); with
`overwrite_any_saved_model`, any gzipped tar holding saved_model.pb at its
root. Any other file is refused, named, and left as it is; checked again just
before the rename, since the file may appear or change while the archive is
written.

This module does not import TensorFlow.
"""

import gzip
import os
import re
import stat
import tarfile
import zlib

from hubexport import atomic
from hubexport.errors import UserError

SUFFIX = ".tar.gz"
LEFT_OUT = frozenset({"fingerprint.pb"})
ALLOWED = ("saved_model.pb, keras_metadata.pb, variables/variables.index, "
           "variables/variables.data-NNNNN-of-NNNNN, and files under assets/ "
           "and assets.extra/")
_ROOT_FILES = frozenset({"saved_model.pb", "keras_metadata.pb"})
_VARIABLES_FILE = re.compile(r"variables\.(index|data-\d{5}-of-\d{5})")
_FREE_DIRECTORIES = ("assets", "assets.extra")  # Any well-named file below them.
# A file or directory name tfhub.dev accepted (tools/validator.py).
_NAME = re.compile(r"[\w-][-!',_\w.=:% ]*")
_COMPRESS_LEVEL = 6  # gzip's default; weights barely compress further at 9.
_LISTED = 8  # Offending paths named in an error; the rest are counted.


def package(directory, output=None, overwrite=False, overwrite_any_saved_model=False):
    """Writes the tfhub.dev archive of the SavedModel `directory`.

    Args:
      directory: a SavedModel directory (saved_model.pb and variables/).
      output: the archive to write, ending in .tar.gz; default: the
        directory's path + ".tar.gz", beside it.
      overwrite: replace an existing `output` that `package` wrote.
      overwrite_any_saved_model: replace any .tar.gz holding saved_model.pb.

    Returns:
      The absolute path of the archive.

    Raises:
      UserError: the directory is not a SavedModel, holds a file or symlink
        tfhub.dev would not accept, or the output is refused.
    """
    given = os.path.abspath(os.path.expanduser(directory))
    directory = os.path.realpath(given)
    check_saved_model(directory)
    output = os.path.abspath(os.path.expanduser(output or given + SUFFIX))
    _check_output(output, directory, overwrite, overwrite_any_saved_model)
    entries = archive_entries(directory)

    # The output is checked again just before the move: it may have changed.
    with atomic.replacing(output, "wb", durable=True, before_replace=lambda: _check_replaceable(
            output, overwrite, overwrite_any_saved_model)) as f:
        write_archive(f, directory, entries)
    return output


def archive_entries(directory):
    """The archive's (relative path, is_directory) entries, sorted.

    Symlinks are refused, not followed, so no entry can lead outside
    `directory`. Raises UserError naming every path that may not go in.
    """
    entries, refused, symlinks, special = [], [], [], []

    def visit(relative):  # "" is `directory` itself.
        folder = os.path.join(directory, *relative.split("/"))
        for name in sorted(os.listdir(folder)):
            child = f"{relative}/{name}" if relative else name
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                symlinks.append(f"{child} -> {os.readlink(path)}")
            elif child in LEFT_OUT:
                continue
            elif stat.S_ISDIR(mode):
                if allowed(child, is_directory=True):
                    entries.append((child, True))
                    visit(child)
                else:  # Its contents need no second mention.
                    refused.append(child + "/")
            elif stat.S_ISREG(mode):
                if allowed(child, is_directory=False):
                    entries.append((child, False))
                else:
                    refused.append(child)
            else:
                special.append(child)

    visit("")
    problems = []
    if refused:
        problems.append(f"not allowed in a tfhub.dev archive: {_listing(refused)}")
    if symlinks:
        problems.append(f"symlinks (the archive holds only regular files): "
                        f"{_listing(symlinks)}")
    if special:
        problems.append(f"not regular files: {_listing(special)}")
    if problems:
        raise UserError(
            f"cannot package {directory}: {'; '.join(problems)}. Allowed: "
            f"{ALLOWED} (names start with a letter, digit, _ or -; "
            f"{', '.join(sorted(LEFT_OUT))} is left out). Delete or move the "
            "other files (notes may go under assets.extra/) and replace "
            "symlinks with copies")
    return sorted(entries, key=lambda entry: entry[0].split("/"))


def write_archive(f, directory, entries):
    """Writes the gzipped tar of `entries` (from archive_entries) to file `f`."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0,
                       compresslevel=_COMPRESS_LEVEL) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for relative, is_directory in entries:
                info = tarfile.TarInfo(relative)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                path = os.path.join(directory, *relative.split("/"))
                if is_directory:
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    continue
                info.mode = 0o644
                with open(path, "rb") as data:
                    info.size = os.fstat(data.fileno()).st_size
                    tar.addfile(info, data)


def check_saved_model(directory):
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a directory; pass the SavedModel "
                        "directory that hubexport export wrote")
    missing = [name for name, present in (
        ("saved_model.pb", os.path.isfile(os.path.join(directory, "saved_model.pb"))),
        ("variables/", os.path.isdir(os.path.join(directory, "variables"))),
    ) if not present]
    if missing:
        raise UserError(
            f"{directory} is not a SavedModel: it has no {' and no '.join(missing)}; "
            "pass the directory that hubexport export (or tf.saved_model.save) "
            "wrote, which holds saved_model.pb and variables/")


def _check_output(output, directory, overwrite, overwrite_any_saved_model=False):
    if not output.endswith(SUFFIX):
        raise UserError(f"output {output} must end with {SUFFIX}, as tfhub.dev's "
                        f"asset-path must; e.g. {directory}{SUFFIX}")
    if _inside(output, directory):
        raise UserError(f"output {output} is inside the SavedModel {directory}; "
                        "write the archive beside it (the default) or elsewhere")
    if os.path.isdir(output):
        raise UserError(f"output {output} is a directory; pass a file path "
                        f"ending in {SUFFIX}")
    _check_replaceable(output, overwrite, overwrite_any_saved_model)
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the directory of output {output} does not exist; "
                        "create it first")


def _check_replaceable(output, overwrite, overwrite_any_saved_model):
    """Refuses an existing `output` that the overwrite flags do not cover (see above)."""
    if not os.path.lexists(output):
        return
    if os.path.islink(output) or not os.path.isfile(output):
        raise UserError(f"output {output} exists and is not a regular file; choose "
                        "another output")
    kind = _archive_kind(output)
    if kind == "ours" and (overwrite or overwrite_any_saved_model):
        return
    if kind == "saved_model" and overwrite_any_saved_model:
        return
    if kind == "ours":
        raise UserError(f"{output} already exists; pass --overwrite (overwrite=True) "
                        "to replace it, or choose another output")
    if kind == "saved_model":
        raise UserError(
            f"{output} already exists, an archive of a SavedModel that hubexport package "
            "did not write; pass --overwrite_any_saved_model to replace it, or choose "
            "another output")
    raise UserError(f"{output} already exists and is not an archive of a SavedModel "
                    f"({kind}); hubexport replaces only its own archives: choose "
                    "another output")


def _archive_kind(path):
    """"ours" (written by package), "saved_model" (a .tar.gz holding
    saved_model.pb) or what else the file is, in a few words."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return "not a gzipped tar file"
    names = {m.name for m in members}
    if "saved_model.pb" not in names:
        shown = _listing(sorted(names)) or "nothing"
        return f"a gzipped tar without saved_model.pb at its root, holding {shown}"
    return "ours" if all(map(_as_package_writes, members)) else "saved_model"


def _as_package_writes(member):
    """Whether a tar entry has the fixed metadata and allowed name write_archive gives."""
    mode = 0o755 if member.isdir() else 0o644
    return ((member.isfile() or member.isdir()) and member.mtime == 0
            and member.uid == member.gid == 0 and member.uname == member.gname == ""
            and member.mode == mode and allowed(member.name, member.isdir()))


def allowed(relative, is_directory):
    parts = relative.split("/")
    if not all(_NAME.fullmatch(part) for part in parts):
        return False
    if parts[0] in _FREE_DIRECTORIES:
        return True
    if is_directory:
        return relative == "variables"
    if len(parts) == 1:
        return relative in _ROOT_FILES
    return len(parts) == 2 and parts[0] == "variables" and bool(
        _VARIABLES_FILE.fullmatch(parts[1]))


def within(path, directory):
    """Whether `path` is `directory` or inside it, symlinks resolved."""
    real, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, directory]) == directory


def _inside(path, directory):
    return within(path, directory) and os.path.realpath(path) != os.path.realpath(directory)


def _listing(paths):
    shown = ", ".join(paths[:_LISTED])
    more = len(paths) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")

