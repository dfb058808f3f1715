"""The clauses of docs/HUB_CONTRACT.md, its sections, and the two tasks with their output keys.

The text restates the document's; tests/test_contract.py fails when their
IDs, order or headings drift apart.
"""

import dataclasses

CLAUSES = {
    "F1": "The directory holds saved_model.pb and variables/: a TF2 SavedModel, not the "
          "TF1 hub format (tfhub_module.pb).",
    "F2": "Nothing in it has side effects outside the model when called: no op reads or "
          "writes files, starts processes or touches the network.",
    "R1": "obj is callable: obj.__call__ is a restored tf.function.",
    "R2": "obj.variables: every variable any call can use, trainable or not.",
    "R3": "obj.trainable_variables: a subset of obj.variables, each trainable=True; what "
          "fine-tuning changes.",
    "R4": "obj.regularization_losses: a list (possibly empty) of zero-argument "
          "tf.functions, each returning a float scalar.",
    "C1": "images: float32 [batch, height, width, 3], RGB in [0, 1], any batch size; "
          "height and width free where the architecture allows.",
    "C2": "training: an optional Python bool keyword, default False, traced for both "
          "values; True runs batch norm on batch statistics and dropout.",
    "C3": "Inference (training=False) is deterministic and each example's output does "
          "not depend on the other examples in the batch.",
    "C4": "Output: one float32 [batch, N] tensor, finite for any input in [0, 1]: N "
          "features (the same at every size) or N logits.",
    "C5": "Optional keyword hyperparameters (e.g. batch_norm_momentum) are tensors with "
          "Python defaults, traced with both values of training.",
    "K1": "hub.KerasLayer(path, trainable=True) fine-tunes in a tf_keras model; with "
          "trainable=False nothing in the backbone moves.",
    "K2": "Keras 3's TFSMLayer(path, call_endpoint='serve', "
          "call_training_endpoint='serve_training') loads, predicts and fine-tunes.",
    "K3": "A serving_default signature takes images and returns one key, feature_vector "
          "or logits, for TF Serving and saved_model_cli.",
}


@dataclasses.dataclass(frozen=True)
class Section:
    """A heading of docs/HUB_CONTRACT.md and the clauses under it."""

    name: str
    heading: str  # The document's "## " heading, exactly.
    clauses: tuple


SECTIONS = (
    Section("Files", "Files", ("F1", "F2")),
    Section("Root object",
            "The root object (`obj = tf.saved_model.load(path)` or `hub.load(path)`)",
            ("R1", "R2", "R3", "R4")),
    Section("Call", "The call `outputs = obj(images, training=False, **hparams)`",
            ("C1", "C2", "C3", "C4", "C5")),
    Section("Consumers", "Consumers it must serve (each is a check too)", ("K1", "K2", "K3")),
)


def section_of(clause):
    """The Section that holds `clause` (KeyError for an unknown ID)."""
    for section in SECTIONS:
        if clause in section.clauses:
            return section
    raise KeyError(f"unknown clause {clause!r}; allowed: {', '.join(CLAUSES)}")



# The two tasks and the output key of each: what C4 returns and K3's one key.
FEATURE_VECTOR, CLASSIFICATION = "feature_vector", "classification"
TASKS = (FEATURE_VECTOR, CLASSIFICATION)
OUTPUT_KEYS = {FEATURE_VECTOR: "feature_vector", CLASSIFICATION: "logits"}
