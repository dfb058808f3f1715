"""assets.extra/hubexport.json as typed records: Provenance and its sub-records.

Every record reads any JSON object (missing keys None, unexpected ones kept
in `extra`) and to_json() gives back what was read, key order included.
"""

import copy
import dataclasses
import json
import os

PROVENANCE_FILE = os.path.join("assets.extra", "hubexport.json")
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


def read_provenance(directory):
    """The JSON of `directory`'s PROVENANCE_FILE as read, or None if there is none
    (or it is not JSON)."""
    path = os.path.join(directory, PROVENANCE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_provenance(directory):
    """The provenance of the SavedModel in `directory` as a Provenance.

    A missing or unreadable file, or one that is not a JSON object, gives an
    empty record (every field None); another tool's fields are kept as read.
    """
    info = read_provenance(directory)
    return Provenance.from_json(info) if isinstance(info, dict) else Provenance()
