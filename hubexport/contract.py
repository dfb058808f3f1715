"""The contract of docs/HUB_CONTRACT.md as data, shared by the exporter and the checker.

  CLAUSES, SECTIONS        the clause IDs of the document, one line each, by section
  TASKS, OUTPUT_KEYS       the two tasks and the output key of each
  *_TOLERANCE              how close two computations must be, named for what they compare
  CHECK_BATCH, ...         how many images a verification or a check calls a model with
  ENDPOINTS                one row per endpoint an export has (see Endpoint)
  Provenance               assets.extra/hubexport.json as typed records

It imports only the standard library (no TensorFlow, numpy or Keras), so the
CLI, the catalog and the tests can use it without starting TensorFlow. It
imports no other hubexport module: every layer may import it.
"""

import copy
import dataclasses
import os

# --- Clauses ------------------------------------------------------------------

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


# --- Tasks, files, tolerances and batch budgets --------------------------------

TASKS = ("feature_vector", "classification")
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}

PROVENANCE_FILE = os.path.join("assets.extra", "hubexport.json")
LABELS_FILE = os.path.join("assets", "labels.txt")  # The top_k signature's labels.

# All relative: max |a - b| / max |b|, b the reference (export.relative_difference).
VERIFICATION_TOLERANCE = 1e-4  # Every endpoint of the reloaded export vs. the Keras model.
REPEAT_CALL_TOLERANCE = 1e-6  # Two identical calls of __call__ (C3, and "changes nothing").
ALONE_VS_BATCH_TOLERANCE = 1e-5  # One example called alone vs. inside a batch (C3).
SERVE_VS_CALL_TOLERANCE = 1e-5  # obj.serve vs. obj(images, training=False) (K2).
SERVING_VS_CALL_TOLERANCE = 1e-4  # serving_default vs. obj(images, training=False) (K3).
# Absolute: |sum of a row - 1| below which outputs look like softmax probabilities (C4).
PROBABILITY_SUM_TOLERANCE = 1e-3
# top_k's confidences vs. the softmax or sigmoid of __call__'s logits (np.isclose).
TOP_K_RTOL, TOP_K_ATOL = 1e-4, 1e-6
# Moving-mean move ratio vs. the ratio of (1 - momentum) it should be (C5).
MOMENTUM_RATIO_TOLERANCE = 0.05

VERIFY_BATCH = 2  # Images per call of the export's verification.
CHECK_BATCH = 3  # Images per call of a check.
SECOND_SIZE_BATCH = 2  # Images per call of a check at a free-size model's second size.
GRADIENT_PIXELS = CHECK_BATCH * 224 * 224  # The most pixels one gradient step of a check takes.


def gradient_batch(height, width):
    """Images per gradient step of a check: CHECK_BATCH, fewer past 224x224 (1 at the least).

    A step keeps every activation for the backward pass: a batch of 3 at
    600x600 ran EfficientNetB7's gradient out of 24 GiB; a batch of 1 peaks
    at 14 GB. hubexport.catalog.estimate counts memory with it.
    """
    return min(CHECK_BATCH, max(1, GRADIENT_PIXELS // (height * width)))


# --- Endpoints ------------------------------------------------------------------

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


# --- Provenance -------------------------------------------------------------------

PROVENANCE_FORMAT_PREFIX = "hubexport-provenance/"
PROVENANCE_VERSION = 1
PROVENANCE_FORMAT = f"{PROVENANCE_FORMAT_PREFIX}{PROVENANCE_VERSION}"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return _is_int(value) or isinstance(value, float)


def _list_of(accepts):
    return lambda value: isinstance(value, list) and all(map(accepts, value))


# The JSON values a field accepts, by the name its metadata gives.
_ACCEPTS = {
    "str": lambda value: isinstance(value, str),
    "int": _is_int,
    "number": _is_number,
    "bool": lambda value: isinstance(value, bool),
    "size": lambda value: _is_int(value) or (_list_of(_is_int)(value) and len(value) == 2),
    "shape": _list_of(lambda d: d is None or _is_int(d)),
    "numbers": _list_of(_is_number),
    "ints": _list_of(_is_int),
    "strs": _list_of(lambda value: isinstance(value, str)),
    "versions": lambda value: isinstance(value, dict) and all(
        isinstance(v, str) or v is None for v in value.values()),
}


def _field(accepts, omit_if_none=False):
    """A JSON field: `accepts` names an _ACCEPTS entry or is a _Record class.

    omit_if_none: left out of to_json() when None, unless it was read.
    """
    return dataclasses.field(default=None,
                             metadata={"accepts": accepts, "omit_if_none": omit_if_none})


def _to_json_value(value):
    """A field's value as JSON: records as dicts, tuples as lists, all copied."""
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    return copy.deepcopy(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Record:
    """A JSON object: its known keys as typed fields, the rest kept as read.

    Every field defaults to None, which from_json gives a missing key. A
    value of an unexpected type (another tool's, or a newer format's) stays
    in `extra` under its key, its field None. `read_keys` (the keys read, in
    order) lets to_json() give back exactly what was read; a record built in
    Python (read_keys None) writes every field, in field order.
    """

    extra: dict = dataclasses.field(default_factory=dict)
    read_keys: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def json_fields(cls):
        return [f for f in dataclasses.fields(cls) if "accepts" in f.metadata]

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_json takes a dict (a JSON object); "
                            f"received {type(data).__name__}")
        known = {f.name: f.metadata["accepts"] for f in cls.json_fields()}
        values, extra = {}, {}
        for key, value in data.items():
            accepts = known.get(key)
            if accepts is not None and value is None:
                values[key] = None
            elif isinstance(accepts, type) and isinstance(value, dict):
                values[key] = accepts.from_json(value)
            elif isinstance(accepts, str) and _ACCEPTS[accepts](value):
                values[key] = copy.deepcopy(value)
            else:
                extra[key] = copy.deepcopy(value)
        return cls(**values, extra=extra, read_keys=tuple(data))

    def to_json(self):
        """The JSON object (a dict of JSON values), keys in their order."""
        fields = {f.name: f for f in self.json_fields()}
        order = list(self.read_keys) if self.read_keys is not None else []
        order += [name for name in fields if name not in order]
        order += [key for key in self.extra if key not in order]
        out = {}
        for key in order:
            value = getattr(self, key) if key in fields else None
            if value is None and key in self.extra:
                out[key] = copy.deepcopy(self.extra[key])
            elif key in fields and (value is not None or self._writes_none(fields[key])):
                out[key] = _to_json_value(value)
        return out

    def _writes_none(self, field):
        if self.read_keys is not None:
            return field.name in self.read_keys
        return not field.metadata["omit_if_none"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source(_Record):
    kind: str | None = _field("str")  # "architecture" or "keras_model".
    path: str | None = _field("str")  # The own model's file.
    sha256: str | None = _field("str")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Input(_Record):
    dtype: str | None = _field("str")  # "float32".
    shape: list | None = _field("shape")  # [None, height, width, 3]; None where free.
    range: list | None = _field("numbers")  # [0.0, 1.0].
    channels: str | None = _field("str")  # "RGB".
    min_size: int | None = _field("int")  # The architecture's; None for an own model.
    size_is_free: bool | None = _field("bool")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Output(_Record):
    key: str | None = _field("str")  # OUTPUT_KEYS[task].
    size: int | None = _field("int")  # N.
    meaning: str | None = _field("str")
    activation: str | None = _field("str", omit_if_none=True)  # Classification only.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Labels(_Record):
    count: int | None = _field("int")
    file: str | None = _field("str")  # LABELS_FILE.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Weights(_Record):
    source: str | None = _field("str")  # "imagenet", "none" or "file".
    path: str | None = _field("str")
    sha256: str | None = _field("str")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verification(_Record):
    max_relative_difference: float | None = _field("number")
    tolerance: float | None = _field("number")  # VERIFICATION_TOLERANCE.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance(_Record):
    """assets.extra/hubexport.json, format PROVENANCE_FORMAT (see export.provenance).

    Provenance.from_json(json.load(f)) reads any JSON object: missing keys
    are None, unexpected ones kept, and to_json() gives it back unchanged.
    """

    format: str | None = _field("str")  # PROVENANCE_FORMAT.
    architecture: str | None = _field("str")  # A row of the table; None for an own model.
    source: Source | None = _field(Source)
    task: str | None = _field("str")  # One of TASKS.
    image_size: int | list | None = _field("size")  # The verified size; [h, w] if not square.
    input: Input | None = _field(Input)
    preprocessing: str | None = _field("str")  # A mode of hubexport.preprocessing.
    feature_layer: str | None = _field("str")
    pooling: str | None = _field("str")  # "avg" or "max"; None for classification.
    output: Output | None = _field(Output)
    labels: Labels | None = _field(Labels)
    multi_label: bool | None = _field("bool")
    top_k: int | None = _field("int")  # With labels only.
    signatures: list | None = _field("strs")  # signature_names(labels).
    serving_size: list | None = _field("ints")  # [height, width] of raw-image serving.
    batch_norm_momentum: float | None = _field("number")  # __call__'s keyword default.
    jit_compile: bool | None = _field("bool")
    weights: Weights | None = _field(Weights)
    request_key: str | None = _field("str")  # export.request_key(plan).
    verification: Verification | None = _field(Verification)
    versions: dict | None = _field("versions")  # Library -> version.

    @property
    def version(self):
        """The format's version (1 today), or None if the format is not hubexport's."""
        number = self.format[len(PROVENANCE_FORMAT_PREFIX):] if self.is_hubexport else ""
        return int(number) if number.isdigit() else None

    @property
    def is_hubexport(self):
        """Whether the format is hubexport's (any version: export.written_by_hubexport)."""
        return isinstance(self.format, str) and self.format.startswith(PROVENANCE_FORMAT_PREFIX)
