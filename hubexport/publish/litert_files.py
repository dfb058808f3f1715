"""The .tflite and its JSON card on disk: where they may go, what they say, how they land.

The card is a sidecar beside the file (FILE.tflite -> FILE.json, format
hubexport-litert/1) naming the file's sha256, so that --overwrite replaces
only a .tflite this command wrote and nobody changed since. The output may
not be inside the SavedModel (nor be it): converting must not modify the
export. Both files are written complete beside the output and moved into
place together (install); a failure leaves neither a partial file nor a
card that describes another file.
"""

import contextlib
import dataclasses
import hashlib
import json
import os

from hubexport import atomic, contract
from hubexport.errors import UserError
from hubexport.publish import package as archive_rules

SUFFIX = ".tflite"
CARD_FORMAT = "hubexport-litert/1"


def card_path(output):
    return output[: -len(SUFFIX)] + ".json"


def card_json(source, output, data, quantize, hw, comparison, provenance):
    import tensorflow as tf

    return {
        "format": CARD_FORMAT,
        "file": os.path.basename(output),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "source": source,
        "source_architecture": provenance.architecture,
        "task": provenance.task,
        "signature": contract.SERVING_DEFAULT,
        "input": {"name": "images", "dtype": "float32", "shape": [None, *hw, 3],
                  "range": [0.0, 1.0], "channels": "RGB"},
        "quantize": quantize,
        "ops": "TFLite builtins only",
        "comparison": dataclasses.asdict(comparison),
        "tolerance": contract.VERIFICATION_TOLERANCE if quantize == "none" else None,
        "not_converted": "every signature but serving_default (the raw-image ones need "
                         "Flex ops)",
        "versions": {"tensorflow": tf.__version__},
    }


def written_by_litert(output, card):
    """Whether `output` is a .tflite this module wrote: `card` is ours and names its sha256."""
    try:
        with open(card) as f:
            info = json.load(f)
        with open(output, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == CARD_FORMAT and info.get(
        "sha256") == digest


def check_output(output, card, source, overwrite):
    """Refuses an output that is not a .tflite, is in (or is) the SavedModel, has no
    directory, or may not be replaced (check_replaceable)."""
    if not output.endswith(SUFFIX):
        raise UserError(f"--output={output} must end with {SUFFIX}; e.g. {source}{SUFFIX}")
    if archive_rules.within(output, source):
        raise UserError(f"--output={output} is inside the SavedModel; write it beside it "
                        "(the default) or elsewhere")
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the directory of --output={output} does not exist; create it first")
    check_replaceable(output, card, overwrite)


def check_replaceable(output, card, overwrite):
    if os.path.isdir(output):
        raise UserError(f"{output} is a directory; choose another --output")
    if not os.path.lexists(output):
        if os.path.lexists(card) and not _is_our_card(card):
            raise UserError(f"{card} exists and is not a card of hubexport litert; "
                            "choose another --output")
        return
    if not written_by_litert(output, card):
        raise UserError(f"{output} exists and hubexport litert did not write it (its card "
                        f"{os.path.basename(card)} is missing or names another file); "
                        "choose another --output")
    if not overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it, or "
                        "choose another --output")


def _is_our_card(card):
    try:
        with open(card) as f:
            return json.load(f).get("format") == CARD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def install(output, card, data, info, overwrite):
    """Moves the .tflite, then its card, into place, both written complete beforehand.

    The card is staged whole at CARD.partial first (atomic.write_json), the
    .tflite beside the output (atomic.replacing), and whether the output may
    be replaced is asked again just before it moves (before_replace: it may
    have changed during the conversion). Should the card then fail to move, the new file
    and the old card, which no longer describes it, are removed: a card naming
    another file's sha256 would make every later --overwrite refuse.
    """
    staged = card + ".partial"
    atomic.write_json(staged, info)
    try:
        with atomic.replacing(output, "wb", before_replace=lambda: check_replaceable(
                output, card, overwrite)) as f:
            f.write(data)
        try:
            os.replace(staged, card)
        except BaseException:
            for path in (output, card):
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staged)
