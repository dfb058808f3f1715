"""Writes the directory a Kaggle Models upload takes, from a SavedModel.

    kaggle.package("models/mobilenet_v2", "jane/mobilenet-v2/tensorFlow2/feature-vector",
                   "upload/mobilenet_v2", license_name="Apache 2.0")

The directory holds the SavedModel's files that hubexport.publish.package puts
in a tfhub.dev archive (its rules, imported: saved_model.pb, variables/,
assets/, assets.extra/, keras_metadata.pb; fingerprint.pb left out; any other
file, symlink or special file refused), and Kaggle's two metadata files:

  - model-metadata.json, the model (the page all variations share): ownerSlug,
    title, slug, subtitle, isPrivate, description, publishTime,
    provenanceSources, the keys and order of `kaggle models init`'s template.
  - model-instance-metadata.json, the variation: ownerSlug, modelSlug,
    instanceSlug, framework "tensorFlow2", overview, usage (Markdown with
    Kaggle's `${PATH}` placeholder, the directory the files are mounted at),
    licenseName, fineTunable, trainingData, modelInstanceType "Unspecified",
    baseModelInstanceId 0, externalBaseModelUrl "", the keys and order of
    `kaggle models instances init`'s template; plus "writtenBy", which marks
    the directory as this module's (Kaggle's tools ignore keys they do not
    know: they read each key by name).

Sources, all Kaggle's own:

  - kaggle-api, docs/models_metadata.md
    (https://github.com/Kaggle/kaggle-api/blob/main/docs/models_metadata.md):
    the fields, the framework names (tensorFlow1, tensorFlow2, tfLite, ...),
    the license names (LICENSES) and the usage placeholders (${PATH}, ...).
  - kaggle-api, kaggle/api/kaggle_api_extended.py: the init templates;
    `kaggle models create` requires ownerSlug, slug, title, isPrivate (a
    bool) and description, `kaggle models instances create` ownerSlug,
    modelSlug, instanceSlug, framework and licenseName, with fineTunable a
    bool and trainingData a list; both leave the metadata files out of the
    upload, and upload a subdirectory only as one archive (--dir-mode zip|tar).
  - kagglehub, src/kagglehub/models.py, models_helpers.py, handle.py
    (https://github.com/Kaggle/kagglehub): model_upload(handle,
    local_model_dir, license_name, version_notes, ignore_patterns) takes
    OWNER/MODEL/FRAMEWORK/VARIATION without a version, creates a missing
    model (private, titled with its slug), uploads the tree as it is
    (subdirectories kept), and reads neither metadata file.
  - Kaggle/kaggle-cli pull request 1134: model slugs are lowercase letters,
    digits and hyphens; owner slugs may also hold underscores.

The metadata (hubexport.publish.kaggle_metadata) comes from the model card (assets.extra/model_card.md, tfhub.dev's
format, hubexport.publish.model_card): the title is the subject of its
one-line description (the architecture, e.g. MobileNetV2) or else the model
slug; the subtitle the rest of that line; the description its sections but
Usage; the variation's usage Kaggle's sections (Model Format, Training Data,
Model Inputs, Model Outputs, Model Usage, Fine-tuning) filled from the card's,
with `PATH` in the code made "${PATH}"; fineTunable and trainingData from
its `fine-tunable` and `dataset` lines. Without a card, the card that
hubexport.json gives is rendered; without either, the metadata says only what
the files show (title: the model slug; fineTunable false), and `log` says so.

The license is never guessed: --license, or the card's `license` line; the
weights' license is their source's (keras.applications' ImageNet weights, a
user's file), which hubexport cannot know. A name is taken in Kaggle's
spelling, its abbreviation in parentheses ("CC BY 4.0") or its SPDX id
("Apache-2.0"), any case; anything else is refused naming the closest.

The directory is written to a staging directory beside the output and moved
into place, as an export is (hubexport.export.write). An existing output is
replaced only with `overwrite`, and only if it is empty or this module wrote
it: its model-instance-metadata.json carries the mark and it holds nothing
but the metadata files and files the archive rules allow. Anything else is
refused and left as it is; checked again just before the move.

This module does not import TensorFlow.
"""

import json
import os
import shutil
import stat

from hubexport import atomic
from hubexport.errors import UserError
from hubexport.publish import package as archive_rules
from hubexport.publish.kaggle_metadata import (  # noqa: F401 (kaggle.X for callers)
    FRAMEWORK, HANDLE_FORM, INSTANCE_METADATA, LICENSES, MARK, MARK_KEY, METADATA_FILES,
    MODEL_METADATA, Card, Handle, canonical_license, choose_license, metadata, parse_card,
    parse_handle, read_card)

def package(directory, handle, output, license_name=None, overwrite=False, log=None):
    """Writes the Kaggle upload directory of the SavedModel `directory`.

    Args:
      directory: a SavedModel directory (saved_model.pb and variables/).
      handle: OWNER/MODEL/tensorFlow2/VARIATION.
      output: the directory to write (not inside the SavedModel, nor holding it).
      license_name: a license from Kaggle's list (LICENSES); default: the one
        the model card states. One of the two is required.
      overwrite: replace an existing `output` that this function wrote.
      log: called with a line for what the caller should know (a missing card).

    Returns:
      The absolute path of the directory written.

    Raises:
      UserError: a bad handle or license, a directory that is not a SavedModel
        or holds files the archive rules refuse, or a refused output.
    """
    log = log or (lambda message: None)
    target = parse_handle(handle)
    directory = os.path.realpath(os.path.abspath(os.path.expanduser(directory)))
    archive_rules.check_saved_model(directory)
    if not output:
        raise UserError("package --kaggle needs --output=DIR, the directory to write for "
                        "the upload (it must not exist, or be one this command wrote)")
    output = os.path.abspath(os.path.expanduser(output))
    _check_output(output, directory, overwrite)
    entries = archive_rules.archive_entries(directory)
    card = read_card(directory, log)
    license_name = choose_license(license_name, card)
    model, instance = metadata(target, card, license_name)

    with atomic.staging_beside(output) as staging:
        _copy(directory, entries, staging)
        atomic.write_json(os.path.join(staging, MODEL_METADATA), model, indent=2)
        atomic.write_json(os.path.join(staging, INSTANCE_METADATA), instance, indent=2)
        _install(staging, output, directory, overwrite)
    log(f"upload it with kagglehub.model_upload({str(target)!r}, {output!r}, "
        f"license_name={license_name!r}, ignore_patterns={list(METADATA_FILES)!r})")
    return output



def _copy(directory, entries, staging):
    """Copies `entries` (archive_entries: sorted, directories first) into `staging`."""
    for relative, is_directory in entries:
        source = os.path.join(directory, *relative.split("/"))
        destination = os.path.join(staging, *relative.split("/"))
        if is_directory:
            os.mkdir(destination)
        else:
            shutil.copyfile(source, destination)


def _check_output(output, directory, overwrite):
    """Refuses an output that is, holds or lies inside the SavedModel, and an
    existing one that `overwrite` does not cover (see above)."""
    if archive_rules.within(output, directory):
        raise UserError(f"--output={output} is the SavedModel {directory} or inside it; "
                        "write the upload directory beside it")
    if archive_rules.within(directory, output):
        raise UserError(f"--output={output} holds the SavedModel {directory}; write the "
                        "upload directory beside it")
    if not os.path.lexists(output):
        return
    if os.path.islink(output) or not os.path.isdir(output):
        raise UserError(f"--output={output} exists and is not a directory; choose "
                        "another output")
    kind = _kind(output)
    if kind in ("empty", "ours"):
        if overwrite:
            return
        what = "empty" if kind == "empty" else f"written by {MARK}"
        raise UserError(f"{output} already exists ({what}); pass --overwrite to replace "
                        "it, or choose another output")
    raise UserError(f"{output} exists and is not a directory {MARK} wrote ({kind}); it is "
                    "left as it is: choose another output")


def _kind(output):
    """"empty", "ours" (marked, and nothing but what this module writes), or why not."""
    if not os.listdir(output):
        return "empty"
    try:
        with open(os.path.join(output, INSTANCE_METADATA), encoding="utf-8") as f:
            marked = json.load(f).get(MARK_KEY) == MARK
    except (OSError, ValueError, AttributeError):
        marked = False
    if not marked:
        return f"it has no {INSTANCE_METADATA} marked {MARK_KEY}: {MARK!r}"
    foreign = _foreign_entries(output)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        return f"it also holds {shown}"
    return "ours"


def _foreign_entries(output):
    """Paths in `output` that this module does not write (a user's files)."""
    foreign = []

    def visit(relative):
        folder = os.path.join(output, *relative.split("/")) if relative else output
        for name in sorted(os.listdir(folder)):
            child = f"{relative}/{name}" if relative else name
            mode = os.lstat(os.path.join(folder, name)).st_mode
            if not relative and name in METADATA_FILES and stat.S_ISREG(mode):
                continue
            if stat.S_ISDIR(mode) and archive_rules.allowed(child, is_directory=True):
                visit(child)
            elif not (stat.S_ISREG(mode) and archive_rules.allowed(child, is_directory=False)):
                foreign.append(child)

    visit("")
    return foreign


def _install(staging, output, directory, overwrite):
    """Moves `staging` to `output` once the output is checked again (it may have
    appeared or changed); the old upload is deleted only once the new one is in
    place (atomic.replace_directory)."""
    _check_output(output, directory, overwrite)
    atomic.replace_directory(staging, output)