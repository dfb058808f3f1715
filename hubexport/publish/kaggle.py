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

The metadata comes from the model card (assets.extra/model_card.md, tfhub.dev's
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

import contextlib
import dataclasses
import json
import os
import re
import shutil
import stat

from hubexport import atomic, names
from hubexport.errors import UserError
from hubexport.export.provenance_file import read_provenance
from hubexport.export.write import staging_beside
from hubexport.publish import model_card
from hubexport.publish import package as archive_rules

MODEL_METADATA = "model-metadata.json"
INSTANCE_METADATA = "model-instance-metadata.json"
METADATA_FILES = (MODEL_METADATA, INSTANCE_METADATA)
FRAMEWORK = "tensorFlow2"  # Kaggle's name (and casing) for a TF2 SavedModel.
HANDLE_FORM = f"OWNER/MODEL/{FRAMEWORK}/VARIATION"
MARK_KEY, MARK = "writtenBy", "hubexport package --kaggle"

# Kaggle's license names, as docs/models_metadata.md lists them.
LICENSES = (
    "Apache 2.0",
    "Attribution 3.0 IGO (CC BY 3.0 IGO)",
    "Attribution 3.0 Unported (CC BY 3.0)",
    "Attribution 4.0 International (CC BY 4.0)",
    "Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)",
    "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)",
    "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
    "Attribution-NonCommercial-ShareAlike 3.0 IGO (CC BY-NC-SA 3.0 IGO)",
    "BSD-3-Clause",
    "CC BY-NC-SA 4.0",
    "CC BY-SA 3.0",
    "CC BY-SA 4.0",
    "CC0: Public Domain",
    "Community Data License Agreement - Permissive - Version 1.0",
    "Community Data License Agreement - Sharing - Version 1.0",
    "GNU Affero General Public License 3.0",
    "GNU Free Documentation License 1.3",
    "GNU Lesser General Public License 3.0",
    "GPL 2",
    "MIT",
    "ODC Attribution License (ODC-By)",
    "ODC Public Domain Dedication and Licence (PDDL)",
    "GPL 3",
)
# SPDX ids (what a model card's `license` line usually holds) of those licenses.
_SPDX = {
    "Apache-2.0": "Apache 2.0",
    "CC-BY-3.0-IGO": "Attribution 3.0 IGO (CC BY 3.0 IGO)",
    "CC-BY-3.0": "Attribution 3.0 Unported (CC BY 3.0)",
    "CC-BY-4.0": "Attribution 4.0 International (CC BY 4.0)",
    "CC-BY-ND-4.0": "Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)",
    "CC-BY-NC-4.0": "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)",
    "CC-BY-NC-ND-4.0":
        "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
    "CC-BY-NC-SA-3.0-IGO": "Attribution-NonCommercial-ShareAlike 3.0 IGO (CC BY-NC-SA 3.0 IGO)",
    "CC-BY-NC-SA-4.0": "CC BY-NC-SA 4.0",
    "CC-BY-SA-3.0": "CC BY-SA 3.0",
    "CC-BY-SA-4.0": "CC BY-SA 4.0",
    "CC0-1.0": "CC0: Public Domain",
    "CDLA-Permissive-1.0": "Community Data License Agreement - Permissive - Version 1.0",
    "CDLA-Sharing-1.0": "Community Data License Agreement - Sharing - Version 1.0",
    "AGPL-3.0": "GNU Affero General Public License 3.0",
    "GFDL-1.3": "GNU Free Documentation License 1.3",
    "LGPL-3.0": "GNU Lesser General Public License 3.0",
    "GPL-2.0": "GPL 2",
    "GPL-3.0": "GPL 3",
    "ODC-By-1.0": "ODC Attribution License (ODC-By)",
    "PDDL-1.0": "ODC Public Domain Dedication and Licence (PDDL)",
}

_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_OWNER = re.compile(r"[a-z0-9][a-z0-9_-]*")
_CARD_METADATA = re.compile(r"<!--\s*([\w-]+)\s*:\s*(.*?)\s*-->")
_DATASETS = {model_card.IMAGENET_DATASET_TAG: "ImageNet (ILSVRC-2012-CLS)"}
_GENERIC_SUBJECT = "A Keras model"  # model_card's subject for a user's own model.


@dataclasses.dataclass(frozen=True)
class Handle:
    """OWNER/MODEL/tensorFlow2/VARIATION, as kagglehub.model_upload takes it."""
    owner: str
    model: str
    framework: str
    variation: str

    def __str__(self):
        return f"{self.owner}/{self.model}/{self.framework}/{self.variation}"


@dataclasses.dataclass(frozen=True)
class Card:
    """What the metadata is made of: a model card's parts."""
    sentence: str  # The one-line description.
    metadata: dict  # Its <!-- key: value --> lines.
    sections: dict  # "## Name" -> the section's Markdown, in order.
    origin: str  # Where it came from, for messages.


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

    with staging_beside(output) as staging:
        _copy(directory, entries, staging)
        atomic.write_json(os.path.join(staging, MODEL_METADATA), model, indent=2)
        atomic.write_json(os.path.join(staging, INSTANCE_METADATA), instance, indent=2)
        _install(staging, output, directory, overwrite)
    log(f"upload it with kagglehub.model_upload({str(target)!r}, {output!r}, "
        f"license_name={license_name!r}, ignore_patterns={list(METADATA_FILES)!r})")
    return output


def parse_handle(text):
    """`text` as a Handle; UserError naming what is wrong with it."""
    parts = (text or "").split("/")
    if len(parts) == 5 and parts[4].isdigit():
        raise UserError(
            f"--kaggle={text} ends in a version; pass {HANDLE_FORM} without it (Kaggle "
            f"numbers the versions itself, one per upload), e.g. --kaggle={'/'.join(parts[:4])}")
    if len(parts) != 4 or not all(parts):
        raise UserError(
            f"--kaggle={text} is not {HANDLE_FORM} (four parts separated by /); "
            f"e.g. --kaggle=jane/mobilenet-v2/{FRAMEWORK}/feature-vector")
    owner, model, framework, variation = parts
    if framework != FRAMEWORK:
        raise UserError(
            f"--kaggle={text}: the framework {framework!r} is not Kaggle's name for a TF2 "
            f"SavedModel; {names.did_you_mean(framework, [FRAMEWORK])}allowed: {FRAMEWORK} "
            "(with this casing)")
    _check_slug(text, "owner", owner, _OWNER, "lowercase letters, digits, - and _")
    _check_slug(text, "model", model, _SLUG, "lowercase letters, digits and single "
                "hyphens, starting and ending with a letter or digit")
    _check_slug(text, "variation", variation, _SLUG, "lowercase letters, digits and "
                "single hyphens, starting and ending with a letter or digit")
    return Handle(owner, model, framework, variation)


def _check_slug(text, what, slug, pattern, allowed):
    if pattern.fullmatch(slug):
        return
    suggestion = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-")
    hint = f"did you mean {suggestion}? " if pattern.fullmatch(suggestion) else ""
    raise UserError(f"--kaggle={text}: the {what} slug {slug!r} is not a Kaggle slug; "
                    f"{hint}allowed: {allowed}")


def canonical_license(name, where="--license"):
    """Kaggle's spelling of the license `name`, or UserError naming the closest."""
    found = _LICENSE_LOOKUP.get(_fold(name))
    if found:
        return found
    close = []
    for key in names.closest(_fold(name), _LICENSE_LOOKUP):
        if _LICENSE_LOOKUP[key] not in close:
            close.append(_LICENSE_LOOKUP[key])
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UserError(f"{where}={name!r} is not one of Kaggle's license names; {hint}"
                    f"allowed: {'; '.join(LICENSES)} (or the abbreviation in parentheses, "
                    "or the SPDX id, e.g. Apache-2.0)")


def _fold(name):
    return " ".join(str(name).split()).casefold()


def _lookup():
    table = {}
    for name in LICENSES:
        table[_fold(name)] = name
        abbreviation = re.search(r"\(([^()]+)\)$", name)
        if abbreviation:
            table.setdefault(_fold(abbreviation.group(1)), name)
    for spdx, name in _SPDX.items():
        table.setdefault(_fold(spdx), name)
    return table


_LICENSE_LOOKUP = _lookup()


def choose_license(given, card):
    """--license, else the card's `license` line; neither is refused (see above)."""
    if given:
        return canonical_license(given)
    stated = card.metadata.get("license") if card else None
    if stated:
        return canonical_license(stated, f"the license line of {card.origin}: license")
    raise UserError(
        "package --kaggle needs --license=NAME: the model card states no license, and "
        "hubexport does not choose one (the weights' license is their source's: check "
        "it); allowed: a name of Kaggle's list, e.g. \"Apache 2.0\", \"MIT\", "
        "\"CC BY 4.0\", \"CC0: Public Domain\"")


def read_card(directory, log):
    """The model card of `directory` as a Card: its assets.extra/model_card.md, else
    the card its hubexport.json renders, else None; `log` says which when not the first."""
    path = os.path.join(directory, model_card.CARD_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return parse_card(f.read(), path)
    provenance = read_provenance(directory)
    if isinstance(provenance, dict):
        with contextlib.suppress(UserError):  # Not hubexport's provenance after all.
            card = parse_card(model_card.render(provenance),
                              f"the card of {directory}/assets.extra/hubexport.json")
            log(f"{directory} has no {model_card.CARD_FILE}; the Kaggle metadata is made "
                "from the card its assets.extra/hubexport.json gives")
            return card
    log(f"{directory} has no model card ({model_card.CARD_FILE}) and no hubexport "
        "provenance: the Kaggle metadata says only what its files show (title: the "
        "model slug, fineTunable: false, no training data); edit it before uploading")
    return None


def parse_card(text, origin):
    """A card in tfhub.dev's format (model_card's docstring) as a Card."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise UserError(
            f"{origin} is not a model card in tfhub.dev's format: its first line is not "
            "'# Module publisher/model/version'; fix it, or remove it to have the "
            "metadata made from assets.extra/hubexport.json")
    sentence, metadata, sections, current = None, {}, {}, None
    for line in lines[1:]:
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif _CARD_METADATA.fullmatch(line.strip()):
            key, value = _CARD_METADATA.fullmatch(line.strip()).groups()
            metadata[key] = value
        elif line.strip() and sentence is None:
            sentence = line.strip()
    if not sentence:
        raise UserError(f"{origin} has no one-line description under its first line "
                        "(tfhub.dev's format); add one, it becomes the Kaggle subtitle")
    return Card(sentence, metadata,
                {name: "\n".join(body).strip() for name, body in sections.items()}, origin)


def metadata(target, card, license_name):
    """(model-metadata.json, model-instance-metadata.json) as dicts, in the
    templates' key order."""
    if card is None:
        return _bare_metadata(target, license_name)
    subject, colon, rest = card.sentence.partition(": ")
    named = colon and subject and subject != _GENERIC_SUBJECT
    title = subject if named else target.model
    subtitle = (rest[:1].upper() + rest[1:]) if colon else card.sentence
    shown = [(name, body) for name, body in card.sections.items()
             if body and name != "Usage"]
    description = "\n\n".join(
        [f"# {title}", card.sentence]
        + [f"## {name}\n\n{body}" for name, body in shown]
        + ["Each variation's page shows how to load and fine-tune it (Usage)."])
    dataset = card.metadata.get("dataset")
    training = [_DATASETS.get(dataset, dataset)] if dataset else []
    sections = card.sections
    usage = _usage([
        ("Model Format", sections.get("Overview")),
        ("Training Data", f"{training[0]}, as the model card states." if training else
         "The model card names no training dataset; Model Format says where the "
         "weights come from."),
        ("Model Inputs", sections.get("Input")),
        ("Model Outputs", sections.get("Outputs")),
        ("Model Usage", "\n\n".join(body for body in (
            sections.get("Usage"),
            _headed("Signatures and endpoints", sections.get("Signatures and endpoints")))
            if body)),
        ("Fine-tuning", sections.get("Fine-tuning")),
    ])
    model = _model_metadata(target, title, subtitle, description,
                            _provenance_sources(sections.get("Provenance")))
    instance = _instance_metadata(target, subtitle, usage, license_name,
                                  fine_tunable=card.metadata.get("fine-tunable") == "true",
                                  training=training)
    return model, instance


def _bare_metadata(target, license_name):
    """The metadata of a SavedModel that came with no card: what its files show."""
    subtitle = "A TF2 SavedModel"
    description = (
        f"# {target.model}\n\n{subtitle}. It came without a model card "
        f"({model_card.CARD_FILE}) and without hubexport's provenance "
        "(assets.extra/hubexport.json), so this page says only what its files show: "
        "describe the model, its input, outputs, weights and license before publishing.")
    usage = _usage([
        ("Model Format", "A TF2 SavedModel (saved_model.pb and variables/)."),
        ("Model Usage", "\n".join([
            "```python", "import tensorflow_hub as hub", "", "obj = hub.load(PATH)", "```",
            "", "In a tf_keras model: `hub.KerasLayer(PATH)`."])),
    ])
    return (_model_metadata(target, target.model, subtitle, description, ""),
            _instance_metadata(target, subtitle, usage, license_name, fine_tunable=False,
                               training=[]))


def _usage(sections):
    """Kaggle's usage Markdown: its template's `# ` sections, each that has a body,
    with the card's `PATH` in code made Kaggle's "${PATH}" (the files' directory)."""
    text = "\n\n".join(f"# {name}\n\n{body}" for name, body in sections if body) + "\n"
    return re.sub(r"\(PATH\b", '("${PATH}"', text)


def _headed(name, body):
    """`body` under a bold `name` (a card section inside one of Kaggle's), or None."""
    return f"**{name}**\n\n{body}" if body else None


def _provenance_sources(section):
    """The card's Provenance bullets on one line: Kaggle's provenanceSources."""
    items = [line[2:].strip().rstrip(".") for line in (section or "").splitlines()
             if line.startswith("- ")]
    return "; ".join(items)


def _model_metadata(target, title, subtitle, description, provenance_sources):
    return {
        "ownerSlug": target.owner,
        "title": title,
        "slug": target.model,
        "subtitle": subtitle,
        "isPrivate": True,  # Kaggle's default; make it public on its page.
        "description": description,
        "publishTime": "",
        "provenanceSources": provenance_sources,
    }


def _instance_metadata(target, overview, usage, license_name, fine_tunable, training):
    return {
        "ownerSlug": target.owner,
        "modelSlug": target.model,
        "instanceSlug": target.variation,
        "framework": target.framework,
        "overview": overview,
        "usage": usage,
        "licenseName": license_name,
        "fineTunable": fine_tunable,
        "trainingData": training,
        "modelInstanceType": "Unspecified",
        "baseModelInstanceId": 0,
        "externalBaseModelUrl": "",
        MARK_KEY: MARK,
    }


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