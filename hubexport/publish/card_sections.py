"""The model card's sections that state facts of the export, each from its provenance fields.

Each takes a contract.Provenance and returns its Markdown (None: nothing to
say); an absent field leaves its line out. hubexport.publish.model_card joins
them; the code examples are hubexport.publish.card_usage's.
"""

import os

from hubexport import contract
from hubexport.architectures import ARCHITECTURES
from hubexport.contract import (CLASSIFICATION, FEATURE_VECTOR, Input, Output, Source,
                                Verification, Weights)

TASK_TAGS = {
    FEATURE_VECTOR: "image-feature-vector",
    CLASSIFICATION: "image-classification",
}
IMAGENET_DATASET_TAG = "imagenet-ilsvrc-2012-cls"

# What each hubexport.preprocessing mode does to the [0, 1] input.
PREPROCESSING = {
    "caffe": "RGB to BGR, scaled to 0..255, ImageNet mean subtracted",
    "tf": "scaled to [-1, 1]",
    "torch": "normalized with the ImageNet mean and standard deviation",
    "raw255": "scaled to 0..255; the network normalizes internally",
}


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
    if p.task == FEATURE_VECTOR:
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
    kind = ("an image feature vector model" if p.task == FEATURE_VECTOR
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
    if p.task == FEATURE_VECTOR:
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
