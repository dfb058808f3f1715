"""What a Kaggle Models upload says about the model (hubexport.publish.kaggle).

The handle (OWNER/MODEL/tensorFlow2/VARIATION, slugs checked), the license
(Kaggle's list, its abbreviations and SPDX ids; never guessed), the model
card read into its parts, and the two metadata files made from them in the
key order of Kaggle's own templates (kaggle.py's docstring has the sources).

This module does not import TensorFlow.
"""

import contextlib
import dataclasses
import os
import re

from hubexport import names
from hubexport.contract import read_provenance
from hubexport.errors import UserError
from hubexport.publish import model_card

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
        try:
            with open(path, encoding="utf-8") as f:
                return parse_card(f.read(), path)
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text (byte {e.start}); save the model "
                            "card as UTF-8, as tfhub.dev and Kaggle read it") from None
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
