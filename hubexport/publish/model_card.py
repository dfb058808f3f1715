"""A model card for an export, in the Markdown format tfhub.dev published.

    card = model_card.render(contract.read_provenance(path))
    model_card.write(staging_directory, provenance)  # assets.extra/model_card.md

The format is tfhub.dev's "Model page markdown format" for a SavedModel:

  - the guide "Write documentation" (https://www.tensorflow.org/hub/writing_documentation,
    source: tensorflow/hub, docs/writing_documentation.md): first line
    `# Module publisher/model/version`, a one-sentence description, then
    metadata as HTML comments, then free Markdown. A SavedModel requires the
    metadata `asset-path` (the world-readable URL of the model's .tar.gz),
    `task`, `fine-tunable` and `format` (`saved_model_2` for a TF2
    SavedModel); `network-architecture`, `dataset`, `language`, `license`,
    `colab` and `interactive-visualizer` are optional, and no other key is.
  - the validator that checked every submission (tensorflow/tfhub.dev,
    tools/validator.py): the handle pattern (publisher of lowercase letters,
    digits and hyphens; version a whole number), one `<!-- key: value -->`
    per line, nothing but metadata and empty lines between the description
    and the first `#` heading, asset-path ending in `.tar.gz`.
  - the allowed tag values (tensorflow/tfhub.dev, tags/task.yaml,
    tags/dataset.yaml, tags/network_architecture.yaml): `image-feature-vector`
    and `image-classification` (the task of Google's own ImageNet classifiers
    that return logits, e.g. google/imagenet/mobilenet_v2_100_224/
    classification/5), dataset `imagenet-ilsvrc-2012-cls`, and architecture ids
    such as `mobilenet-v2`. Where no id fits (DenseNet, ConvNeXt, VGG,
    Xception, a user's own Keras model), the optional `network-architecture`
    line is left out rather than invented; `license` and `language` are left
    out too (the weights' license is their source's; images have no
    language). Older files name `task` `module-type`; the validator's last
    version requires `task`.

The asset-path written here is a placeholder under https://example.com/ (a
domain reserved for examples): replace it, or pass asset_path=, with the URL
where the archive that hubexport.publish.package writes is uploaded.

Every section is rendered from the provenance fields that are set (a
contract.Provenance, or the dict export.provenance() writes, read with
Provenance.from_json); an absent key, one set to None or one of an unexpected
type leaves its line out. The endpoints' lines are the `card` column of
contract.ENDPOINTS, the architecture's tag the `tfhub` column of the
architecture table.

The sections are written in hubexport.publish.card_sections (what the export
is, takes and returns, its endpoints and provenance) and card_usage (the code
examples); this module validates the handle and joins them. Every function
and table this module defined before that split is still importable from it.
"""

import os
import re

from hubexport.contract import Provenance, Source
from hubexport.errors import UserError
# The sections, and the names the card's readers import from here.
from hubexport.publish.card_sections import (IMAGENET_DATASET_TAG, PREPROCESSING,  # noqa: F401
                                             TASK_TAGS, _architecture_tag, _description,
                                             _feature_source, _from_keras_model, _header,
                                             _input, _momentum_clause, _multi_label, _number,
                                             _outputs, _overview, _provenance, _signatures,
                                             _weights_sentence, _weights_source)
from hubexport.publish.card_usage import _fine_tuning, _hw, _usage  # noqa: F401

CARD_FILE = os.path.join("assets.extra", "model_card.md")

_HANDLE = re.compile(
    r"(?P<publisher>[a-z\d-]+)/(?P<name>[\w.-]+(/[\w.-]+)*)/(?P<version>\d+)")


def default_handle(provenance):
    """`hubexport/<architecture or own model file, lowercased>/<task>/1`."""
    p = _typed(provenance)
    own = os.path.basename((p.source or Source()).path or "model")
    name = p.architecture or os.path.splitext(own)[0]
    name = re.sub(r"[^\w.-]", "-", str(name).lower())
    task = re.sub(r"[^\w.-]", "-", str(p.task or "model"))
    return f"hubexport/{name}/{task}/1"


def _typed(provenance):
    """`provenance` as a contract.Provenance (a dict is read with from_json)."""
    if isinstance(provenance, Provenance):
        return provenance
    return Provenance.from_json(provenance)


def render(provenance, handle=None, asset_path=None):
    """The Markdown model card of an export described by `provenance`.

    Args:
      provenance: a contract.Provenance, or the dict export.provenance()
        writes (any subset of its keys).
      handle: "publisher/model/version", as tfhub.dev's first line needs it;
        default: default_handle(provenance).
      asset_path: the URL of the model's .tar.gz; default: a placeholder
        https://example.com/<handle>.tar.gz to be replaced before publishing.
    """
    provenance = _typed(provenance)
    handle = handle or default_handle(provenance)
    if not _HANDLE.fullmatch(handle):
        raise UserError(
            f"model card handle {handle!r} is not publisher/model/version; "
            "allowed: a publisher of lowercase letters, digits and -, a model "
            "name of letters, digits, _ . - and /, a whole-number version, "
            "e.g. hubexport/mobilenetv2/feature_vector/1")
    asset_path = asset_path or f"https://example.com/{handle}.tar.gz"
    if not asset_path.endswith(".tar.gz"):
        raise UserError(
            f"asset_path={asset_path} must end with .tar.gz (tfhub.dev's "
            "asset-path is the URL of the archive that hubexport.publish.package writes)")
    task = provenance.task
    if task not in TASK_TAGS:
        raise UserError(
            f"cannot write a model card for task {task!r}; allowed: "
            f"{', '.join(TASK_TAGS)} (is this hubexport's provenance?)")

    sections = [
        _header(provenance, handle, asset_path),
        _overview(provenance),
        _input(provenance),
        _outputs(provenance),
        _signatures(provenance),
        _usage(provenance),
        _fine_tuning(provenance),
        _provenance(provenance),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def write(directory, provenance, handle=None, asset_path=None):
    """Writes the card to `directory`/assets.extra/model_card.md; returns its path.

    `directory` is an export's staging directory, so a plain write is enough.
    """
    path = os.path.join(directory, CARD_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(provenance, handle, asset_path))
    return path
