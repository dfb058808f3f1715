"""A model card for an export, in the Markdown format tfhub.dev published.

    card = model_card.render(export.read_provenance(path))
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
"""

import os
import re

from hubexport import contract
from hubexport.architectures import ARCHITECTURES
from hubexport.contract import Input, Output, Provenance, Source, Verification, Weights
from hubexport.errors import UserError

CARD_FILE = os.path.join("assets.extra", "model_card.md")

TASK_TAGS = {
    "feature_vector": "image-feature-vector",
    "classification": "image-classification",
}
IMAGENET_DATASET_TAG = "imagenet-ilsvrc-2012-cls"

# What each hubexport.preprocessing mode does to the [0, 1] input.
PREPROCESSING = {
    "caffe": "RGB to BGR, scaled to 0..255, ImageNet mean subtracted",
    "tf": "scaled to [-1, 1]",
    "torch": "normalized with the ImageNet mean and standard deviation",
    "raw255": "scaled to 0..255; the network normalizes internally",
}

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


def _header(p, handle, asset_path):
    """Title, one-line description and the metadata block."""
    metadata = [
        ("asset-path", asset_path),
        ("task", TASK_TAGS[p.task]),
        ("network-architecture", None if _from_keras_model(p) else _architecture_tag(p)),
        ("dataset", IMAGENET_DATASET_TAG if _weights_source(p) == "imagenet" else None),
        ("fine-tunable", "true"),
        ("format", "saved_model_2"),
    ]
    lines = [f"# Module {handle}", _description(p), ""]
    lines += [f"<!-- {key}: {value} -->" for key, value in metadata if value]
    return "\n".join(lines)


def _architecture_tag(p):
    """The architecture's id in tfhub.dev's tags (the table's tfhub column), or None."""
    row = ARCHITECTURES.get(p.architecture)
    return row.tfhub if row else None


def _description(p):
    """One sentence: tfhub.dev shows it in search results."""
    architecture = p.architecture or "A Keras model"
    size = (p.output or Output()).size
    if p.task == "feature_vector":
        what = "image feature vectors" + (f" ({size} features)" if size else "")
    else:
        what = "image classification logits" + (f" for {size} classes" if size else "")
    weights = {
        "imagenet": " with ImageNet weights",
        "none": " with random weights (for testing only)",
    }.get(_weights_source(p), "")
    return f"{architecture}: {what}{weights}, exported from Keras by hubexport."


def _overview(p):
    architecture = p.architecture
    source = p.source or Source()
    lines = ["## Overview", ""]
    if _from_keras_model(p):
        origin = (f"the Keras model file `{os.path.basename(source.path)}`"
                  if source.path else "a Keras model")
    elif architecture:
        origin = f"the Keras application `keras.applications.{architecture}`"
    else:
        origin = "a Keras model"
    kind = ("an image feature vector model" if p.task == "feature_vector"
            else "an image classifier (it returns logits)")
    lines.append(
        f"This is {kind}, built from {origin} and saved as a "
        "[TF2 SavedModel](https://www.tensorflow.org/hub/tf2_saved_model) that "
        "follows the [reusable SavedModel API]"
        "(https://www.tensorflow.org/hub/reusable_saved_models) and the "
        "[common SavedModel API for image tasks]"
        "(https://www.tensorflow.org/hub/common_saved_model_apis/images).")
    weights = _weights_sentence(p)
    if weights:
        lines += ["", weights]
    return "\n".join(lines)


def _from_keras_model(p):
    """Whether the export came from a user's Keras model, not an application."""
    return (p.source or Source()).kind == "keras_model"


def _weights_source(p):
    return (p.weights or Weights()).source


def _weights_sentence(p):
    weights = p.weights or Weights()
    source = weights.source
    if source == "imagenet":
        return ("Weights: Keras' ImageNet (ILSVRC-2012-CLS) weights. Their license "
                "is that of their source; check it before publishing.")
    if source == "none":
        return ("Weights: random initialization (`weights=none`). This model is "
                "for testing the export pipeline, not for predictions.")
    if source == "file":
        name = os.path.basename(weights.path) if weights.path else None
        return "Weights: loaded from the file" + (f" `{name}`." if name else ".")
    return None


def _input(p):
    spec = p.input or Input()
    shape = spec.shape
    lines = ["## Input", ""]
    lines.append(
        "`images`: a {dtype} tensor of shape `[batch, height, width, 3]`, "
        "{channels} channels last, values in [{low}, {high}] (what "
        "`tf.image.decode_*` followed by `tf.image.convert_image_dtype(..., "
        "tf.float32)` gives). Any batch size works.".format(
            dtype=spec.dtype or "float32",
            channels=spec.channels or "RGB",
            low=_number((spec.range or [0, 1])[0]),
            high=_number((spec.range or [0, 1])[1]),
        ))
    min_size = spec.min_size
    at_least = f" of at least {min_size} x {min_size} pixels" if min_size else ""
    if spec.size_is_free:
        size = "Height and width are free: any size" + at_least + " works"
        if p.image_size:
            size += f"; the export was verified at {p.image_size} x {p.image_size}"
        lines += ["", size + "."]
    elif shape and len(shape) == 4 and shape[1] and shape[2]:
        lines += ["", f"Height and width are fixed: `height` x `width` = "
                      f"{shape[1]} x {shape[2]} pixels."]
    elif p.image_size:
        lines += ["", f"Height and width are fixed: {p.image_size} x "
                      f"{p.image_size} pixels."]
    mode = p.preprocessing
    if mode:
        what = PREPROCESSING.get(mode)
        lines += ["", f"The model does its own preprocessing (mode `{mode}`"
                      + (f": {what}" if what else "")
                      + "); do not call `preprocess_input` on the images."]
    return "\n".join(lines)


def _outputs(p):
    output = p.output or Output()
    size = output.size
    shape = f"`[batch, {size}]`" if size else "`[batch, N]`"
    lines = ["## Outputs", ""]
    if p.task == "feature_vector":
        lines.append(f"A float32 tensor of shape {shape}: one feature vector per "
                     "image" + (f" (`num_features` = {size})" if size else "")
                     + "; its size does not depend on the image size.")
        how = _feature_source(p)
        if how:
            lines += ["", how]
        elif output.meaning:
            lines += ["", f"Each vector is the {output.meaning}."]
        return "\n".join(lines)

    lines.append(f"A float32 tensor of shape {shape}: **logits**, the scores "
                 "before the final activation"
                 + (f", for `num_classes` = {size} classes" if size else "") + ".")
    if output.meaning:
        lines += ["", f"Meaning: {output.meaning}."]
    if _multi_label(p):
        lines += ["", "This is a **multi-label** classifier: the classes are "
                      "independent, and `tf.sigmoid(logits)` gives each class's "
                      "probability (they need not sum to 1). Train it with "
                      "`BinaryCrossentropy(from_logits=True)`."]
    else:
        activation = output.activation or "softmax"
        lines += ["", f"The logits are meant for **{activation}**: "
                      f"`tf.nn.{activation}(logits)` gives the class probabilities. "
                      "Train it with `SparseCategoricalCrossentropy(from_logits=True)`."]
    labels = p.labels
    if labels and labels.file:
        count = f" ({labels.count} lines)" if labels.count else ""
        lines += ["", f"Class names: `{labels.file}` in the SavedModel, one "
                      f"per line{count}; line i names logit i."]
    if p.top_k:
        lines += ["", f"`top_k` = {p.top_k}: the number of highest-scoring "
                      "classes the export is configured to report "
                      f"(`tf.math.top_k(logits, k={p.top_k})`)."]
    return "\n".join(lines)


def _multi_label(p):
    if p.multi_label:
        return True
    return (p.output or Output()).activation == "sigmoid"


def _feature_source(p):
    """Where the features come from, when the provenance says it."""
    layer = p.feature_layer
    pooling = {"avg": "global average pooling", "max": "global max pooling"}.get(
        p.pooling)
    if not layer and not pooling:
        return None
    where = f"the output of layer `{layer}`" if layer else "the last feature map"
    return f"Each vector is {pooling + ' of ' if pooling else ''}{where}."


def _signatures(p):
    """One line per endpoint: the `card` column of contract.ENDPOINTS.

    The functions' lines are the table's; the signatures are those the
    provenance lists (serving_default first, always), each with its row's
    line, or SIGNATURE_CARD for a name the table does not have.
    """
    key = (p.output or Output()).key or contract.OUTPUT_KEYS[p.task]
    names = list(p.signatures or [contract.SERVING_DEFAULT])
    if contract.SERVING_DEFAULT not in names:
        names.insert(0, contract.SERVING_DEFAULT)
    lines = ["## Signatures and endpoints", ""]
    lines += [row.card.format(momentum=_momentum_clause(p)) for row in contract.ENDPOINTS
              if row.kind == contract.FUNCTION and row.card]
    if p.jit_compile:
        lines.append("- Compiled with XLA: `obj(images, training=False)`, `obj.serve` "
                     "and every signature run as one XLA-compiled function (the first "
                     "call at each new input shape compiles it, which takes seconds); "
                     "`training=True` and `obj.serve_training` are not compiled.")
    cards = {row.name: row.card for row in contract.ENDPOINTS
             if row.kind == contract.SIGNATURE and row.card}
    lines += [cards.get(name, contract.SIGNATURE_CARD).format(name=name, key=key)
              for name in names]
    return "\n".join(lines)


def _momentum_clause(p):
    momentum = p.batch_norm_momentum
    if momentum is None:
        return ""
    return f"; keyword `batch_norm_momentum` (default {_number(momentum)})"


def _hw(p):
    """Height and width for the code examples."""
    shape = (p.input or Input()).shape
    if shape and len(shape) == 4 and shape[1] and shape[2]:
        return shape[1], shape[2]
    size = p.image_size or 224
    return size, size


def _usage(p):
    height, width = _hw(p)
    feature_vector = p.task == "feature_vector"
    head = "\n    tf_keras.layers.Dense(NUM_CLASSES)," if feature_vector else ""
    keras3_out = "keras.layers.Dense(NUM_CLASSES)(backbone(inputs))" if feature_vector \
        else "backbone(inputs)"
    loss = ("BinaryCrossentropy" if not feature_vector and _multi_label(p)
            else "SparseCategoricalCrossentropy")
    return "\n".join([
        "## Usage",
        "",
        "Load it with `hub.load` or `tf.saved_model.load`:",
        "",
        "```python",
        "import tensorflow_hub as hub",
        "",
        "obj = hub.load(PATH)",
        "outputs = obj(images)  # images: float32 [batch, height, width, 3] in [0, 1]",
        "```",
        "",
        "In a tf_keras model (`hub.KerasLayer` is a tf_keras layer):",
        "",
        "```python",
        "import tensorflow_hub as hub",
        "import tf_keras",
        "",
        "model = tf_keras.Sequential([",
        f"    tf_keras.Input(({height}, {width}, 3)),",
        f"    hub.KerasLayer(PATH, trainable=False),  # True to fine-tune{head}",
        "])",
        "```",
        "",
        "In a Keras 3 model (`hub.KerasLayer` cannot go there), with hubexport's "
        "layer, which fine-tunes with any Keras optimizer:",
        "",
        "```python",
        "import keras",
        "from hubexport.keras import ReusableLayer",
        "",
        "backbone = ReusableLayer(PATH, trainable=False)  # True to fine-tune",
        f"inputs = keras.Input(({height}, {width}, 3))",
        f"model = keras.Model(inputs, {keras3_out})",
        f"model.compile(keras.optimizers.Adam(1e-4), keras.losses.{loss}(from_logits=True))",
        "```",
        "",
        "`keras.layers.TFSMLayer(PATH, call_endpoint=\"serve\", "
        "call_training_endpoint=\"serve_training\")` loads it too, without "
        "hubexport, and predicts; but in a default `fit` it trains only with "
        "optimizers that keep no slot variables (plain SGD): with Adam, RMSprop "
        "or SGD with momentum, Keras fails with \"... is not a valid scope name\" "
        "(Keras names the slots after the restored variables, whose names end "
        "in `:0`), unless the optimizer is built first: "
        "`model.optimizer.build(model.trainable_variables)`. It adds no "
        "regularization losses and takes no hyperparameters.",
    ])


def _fine_tuning(p):
    lines = [
        "## Fine-tuning",
        "",
        "The model is fine-tunable: `hub.KerasLayer(PATH, trainable=True)` in "
        "tf_keras, or `hubexport.keras.ReusableLayer(PATH, trainable=True)` in "
        "Keras 3, trains its weights with the rest of the model (and adds the "
        "model's regularization losses to the loss).",
        "",
        "- Use a low learning rate (e.g. 1e-5 to 1e-4 with Adam, or first train "
        "the new layers with the model frozen): large updates destroy what the "
        "pretrained weights know.",
        "- Batch norm: in training, its layers normalize with the statistics of "
        "each batch and update their moving averages in place. Use batches that "
        "are not too small, or keep the model frozen (`trainable=False`), which "
        "keeps the moving averages as they are.",
    ]
    momentum = p.batch_norm_momentum
    if momentum is not None:
        lines += [
            f"- The momentum of batch norm's moving averages defaults to "
            f"{_number(momentum)}; set another value with",
            "",
            "  ```python",
            "  hub.KerasLayer(PATH, trainable=True,",
            "                 arguments=dict(batch_norm_momentum=0.997))",
            "  ReusableLayer(PATH, trainable=True,",
            "                arguments=dict(batch_norm_momentum=0.997))  # Keras 3",
            "  ```",
        ]
    return "\n".join(lines)


def _provenance(p):
    lines = []
    source = p.source or Source()
    if _from_keras_model(p):
        line = "- Source: a Keras model"
        if source.path:
            line += f" file `{os.path.basename(source.path)}`"
        if source.sha256:
            line += f", sha256 `{source.sha256}`"
        lines.append(line + ".")
    elif p.architecture:
        lines.append(f"- Source: `keras.applications.{p.architecture}`.")
    weights = p.weights or Weights()
    if weights.source:
        line = f"- Weights: `{weights.source}`"
        if weights.path:
            line += f" (`{os.path.basename(weights.path)}`)"
        if weights.sha256:
            line += f", sha256 `{weights.sha256}`"
        lines.append(line + ".")
    verification = p.verification or Verification()
    difference = verification.max_relative_difference
    if difference is not None:
        line = ("- Verified after export: the reloaded SavedModel's outputs differ "
                f"from the Keras model's by at most {difference:.1e}, relative to "
                "the largest output magnitude")
        if verification.tolerance is not None:
            line += f" (tolerance {verification.tolerance:.0e})"
        lines.append(line + ".")
    versions = p.versions or {}
    shown = [f"{name} {version}" for name, version in versions.items() if version]
    if shown:
        lines.append(f"- Versions: {', '.join(shown)}.")
    if not lines:
        return None
    return "\n".join(["## Provenance", ""] + lines + [
        "", "The full record is `assets.extra/hubexport.json` in the SavedModel."])


def _number(value):
    """1.0 -> "1", 0.99 -> "0.99"."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
