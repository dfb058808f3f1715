"""ENDPOINTS: one row per endpoint an export has, what builds, checks and documents it.

hubexport.reusable builds a row's endpoint, export.verification compares it,
the checks named in its row exercise it and the model card prints its line.
"""

import dataclasses
import os

LABELS_FILE = os.path.join("assets", "labels.txt")  # The top_k signature's labels.

# Kinds: how a user reaches the endpoint on obj = tf.saved_model.load(path).
FUNCTION = "attribute function"  # obj.<name>, a restored tf.function.
SIGNATURE = "signature"  # obj.signatures[name], a concrete function taking keywords.
ATTRIBUTE = "attribute"  # obj.<name>, a list (of variables or of loss functions).
ASSET = "asset"  # obj.<name>, a tf.saved_model.Asset (a file in assets/).

# When an export has the endpoint.
ALWAYS = "always"
WITH_LABELS = "with labels"  # Classification exported with --labels (and --top_k).
WITH_RAW_IMAGES = "with raw-image serving"  # Every hubexport export (make_root with Extras).

# What the export's verification (export.verify) compares the endpoint with.
KERAS_REFERENCE = "keras reference"
CALL_ON_RESIZED = "__call__ on resized pixels"
TOP_K_OF_CALL = "top k of __call__"
COMPARISONS = {
    KERAS_REFERENCE: "the Keras model's own graph trace on keras.applications.<module>."
                     "preprocess_input(255 * images) (an own model: also the model as saved, "
                     "its removed activation applied to the logits), within "
                     "VERIFICATION_TOLERANCE",
    CALL_ON_RESIZED: "__call__ on the same pixels converted to [0, 1] and resized to the "
                     "serving size, under the output key, within VERIFICATION_TOLERANCE",
    TOP_K_OF_CALL: "the k largest softmax or sigmoid values of __call__'s logits, most "
                   "confident first, and the labels of those classes (ties either way), "
                   "within TOP_K_RTOL and TOP_K_ATOL",
}

# The names, as builders and checks spell them.
CALL, SERVE, SERVE_TRAINING = "__call__", "serve", "serve_training"
VARIABLES, TRAINABLE_VARIABLES = "variables", "trainable_variables"
REGULARIZATION_LOSSES, LABELS_ATTRIBUTE = "regularization_losses", "labels_file"
SERVING_DEFAULT, TOP_K_SIGNATURE = "serving_default", "top_k"
BYTES_SIGNATURE, UINT8_SIGNATURE = "serving_image_bytes", "serving_uint8"
TOP_K_LABELS, TOP_K_CONFIDENCES = "labels", "confidences"  # The outputs of top_k.
# __call__'s hyperparameter keyword (C5), where every batch norm layer shares a momentum.
MOMENTUM_KEYWORD = "batch_norm_momentum"

IMAGES = "images: float32 [batch, height, width, 3], RGB in [0, 1] (C1)"
# The model card's line for a signature that has no line of its own (every
# signature but serving_default, and those of other tools' provenance).
SIGNATURE_CARD = ("- signature `{name}`: `saved_model_cli show --dir PATH --tag_set serve "
                  "--signature_def {name}` shows its inputs and outputs.")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One endpoint of an export: what builds it, checks it and documents it.

    clause: the clause that requires it or, for an optional extra, the one it
      serves. input_name: the keyword of its one input (None: takes none).
    compared_with: a key of COMPARISONS, or None when the export's
      verification does not call it (the checks named in `checks` do).
    present: ALWAYS, WITH_LABELS or WITH_RAW_IMAGES.
    checks: the names of the checks of `hubexport check` that exercise it.
    card: its line in the model card's "Signatures and endpoints" (a
      str.format template: {momentum}, {key}, {name}), or None when another
      row's line names it (serve_training: serve's; the top_k function: its
      signature's).
    """

    name: str
    kind: str
    clause: str
    input_name: str | None
    takes: str
    returns: str
    compared_with: str | None
    present: str
    checks: tuple
    card: str | None = None


# Adding an endpoint: one row here and one builder in hubexport.reusable
# (@builds(kind, name)); the export's verification, the provenance's
# signature list, the model card and the checks read this table, and
# tests/test_contract.py fails when a row has no builder or a builder no row.
ENDPOINTS = (
    Endpoint(CALL, FUNCTION, "R1", "images",
             IMAGES + "; training=False (traced for False and True, C2); batch_norm_momentum="
             "<the model's> when every batch norm layer has the same momentum (C5)",
             "float32 [batch, N]: features or logits (C4)", KERAS_REFERENCE, ALWAYS,
             ("restored_call", "input_signature", "free_size", "training_argument",
              "training_call", "deterministic", "batch_independent", "output_tensor",
              "documented_output_size", "output_finite", "feature_size_constant",
              "logits_not_probabilities", "hyperparameters", "hyperparameter_effects",
              "hub_fine_tuning", "hub_frozen"),
             "- `obj(images, training=False)`: the call that `hub.load` and `hub.KerasLayer` "
             "use; `training=True` runs batch norm on batch statistics{momentum}."),
    Endpoint(SERVE, FUNCTION, "K2", "images", IMAGES, "__call__(images, training=False)",
             KERAS_REFERENCE, ALWAYS, ("tfsm_layer", "serve_endpoint"),
             "- `obj.serve(images)` and `obj.serve_training(images)`: the endpoints of "
             "`keras.layers.TFSMLayer` (Keras 3)."),
    Endpoint(SERVE_TRAINING, FUNCTION, "K2", "images", IMAGES,
             "__call__(images, training=True)", None, ALWAYS,
             ("tfsm_layer", "serve_training_mode")),
    Endpoint(VARIABLES, ATTRIBUTE, "R2", None, "nothing (a list of tf.Variables)",
             "every variable of every trace", None, ALWAYS, ("variables",)),
    Endpoint(TRAINABLE_VARIABLES, ATTRIBUTE, "R3", None, "nothing (a list of tf.Variables)",
             "the model's trainable variables", None, ALWAYS,
             ("trainable_variables", "training_gradients")),
    Endpoint(REGULARIZATION_LOSSES, ATTRIBUTE, "R4", None,
             "nothing (a list of zero-argument tf.functions)",
             "one float32 scalar per regularized weight", None, ALWAYS,
             ("regularization_losses",)),
    Endpoint(SERVING_DEFAULT, SIGNATURE, "K3", "images", IMAGES,
             "{output key: __call__(images, training=False)}", KERAS_REFERENCE, ALWAYS,
             ("serving_signature", "serving_output"),
             "- signature `serving_default`: input `images`, output `{{\"{key}\": ...}}`, "
             "for TF Serving and `saved_model_cli`."),
    Endpoint(TOP_K_SIGNATURE, FUNCTION, "C4", "images", IMAGES,
             "{'labels': string [batch, k], 'confidences': float32 [batch, k]}", None,
             WITH_LABELS, ("top_k_labels",)),
    Endpoint(LABELS_ATTRIBUTE, ASSET, "C4", None, "nothing (the asset " + LABELS_FILE + ")",
             "one label per line; line i names logit i", None, WITH_LABELS,
             ("top_k_labels",)),
    Endpoint(TOP_K_SIGNATURE, SIGNATURE, "C4", "images", IMAGES,
             "{'labels': string [batch, k], 'confidences': float32 [batch, k]}",
             TOP_K_OF_CALL, WITH_LABELS, ("top_k_labels",), SIGNATURE_CARD),
    Endpoint(BYTES_SIGNATURE, SIGNATURE, "K3", "image_bytes",
             "image_bytes: string [batch], one encoded JPEG/PNG/GIF/BMP per image, any size",
             "serving_default's outputs (and top_k's, with labels) on the decoded images "
             "resized to the serving size", CALL_ON_RESIZED, WITH_RAW_IMAGES, (), SIGNATURE_CARD),
    Endpoint(UINT8_SIGNATURE, SIGNATURE, "K3", "images",
             "images: uint8 RGB [batch, height, width, 3], any size",
             "serving_default's outputs (and top_k's, with labels) on the images resized "
             "to the serving size", CALL_ON_RESIZED, WITH_RAW_IMAGES, (), SIGNATURE_CARD),
)


def endpoints(labels, raw_images=True, kind=None):
    """The rows of ENDPOINTS an export has, in table order.

    labels: whether it was exported with labels (the top_k signature);
    raw_images: whether make_root was given Extras (every hubexport export);
    kind: only rows of this kind (FUNCTION, SIGNATURE, ATTRIBUTE or ASSET).
    """
    present = {ALWAYS} | ({WITH_LABELS} if labels else set()) | (
        {WITH_RAW_IMAGES} if raw_images else set())
    return tuple(e for e in ENDPOINTS
                 if e.present in present and (kind is None or e.kind == kind))


def signature_names(labels, raw_images=True):
    """The provenance's "signatures": the signature keys an export has, in table order."""
    return [e.name for e in endpoints(labels, raw_images, SIGNATURE)]
