"""Converts a SavedModel's serving_default to a LiteRT (.tflite) model, and verifies it.

    result = litert.convert("models/mnv2")            # writes models/mnv2.tflite and .json
    result = litert.convert("models/cls", quantize="int8", representative_images="photos/")
    print(result.summary)

Only `serving_default` (float32 [batch, height, width, 3] in [0, 1] -> one
float32 [batch, N]) is converted, with TFLite builtin ops only: the
raw-image signatures decode strings (`serving_image_bytes`) and resize
images of any size, which LiteRT runs only with the Flex delegate (TF
Select), so a builtins-only file cannot hold them. A serving_default that
needs other ops is refused, naming them (the converter lists them).

Height and width are fixed (LiteRT plans its buffers for one size): the
signature's own, else --image_size, else the provenance's image_size;
batch stays free (-1 in the file's shape signature).

The converted model then runs in the `ai_edge_litert` interpreter beside
the SavedModel on the same images (--representative_images, decoded and
resized as serving_image_bytes does, else a few seeded random images):
  none     within contract.VERIFICATION_TOLERANCE relative, else refused and
           nothing is written (an export that fails its verification);
  dynamic, float16, int8
           the relative difference, and for classification top-1 agreement
           (same arg max) and top-5 agreement (the SavedModel's top class
           among the LiteRT model's five best), reported, not judged. int8
           calibrates on --representative_images (required), integer
           kernels inside, float32 input and output.

The card is a JSON sidecar beside the file (FILE.tflite -> FILE.json,
format hubexport-litert/1): source, size, quantization, the comparison, and
the .tflite's sha256. --overwrite replaces only a .tflite whose sidecar is
ours and names its sha256 (so a file this command wrote, unchanged). Both
files are written to .partial files beside the output (hubexport.atomic)
and moved into place after verification.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re

from hubexport import atomic, contract
from hubexport.errors import UserError, summarize

SUFFIX = ".tflite"
CARD_FORMAT = "hubexport-litert/1"
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
EXTRA = 'pip install -e ".[litert]"'
RANDOM_IMAGES = 4  # Images compared without --representative_images.


class NotBuiltin(UserError):
    """serving_default needs ops that are not TFLite builtins; .ops names them."""

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = ops


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The LiteRT model's outputs against the SavedModel's on the same images."""

    images: int
    image_source: str  # "random" or the --representative_images directory.
    relative_difference: float
    top1: float | None = None  # Classification only: fraction of images.
    top5: float | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    path: str
    card: str
    comparison: Comparison
    summary: str


def interpreter_class():
    """ai_edge_litert's Interpreter; its absence is one line naming the extra."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError(
            "LiteRT conversion needs the optional package ai-edge-litert, which is not "
            f"installed; install the extra: {EXTRA}") from None
    return Interpreter


def convert(directory, output=None, quantize="none", representative_images=None,
            image_size=None, overwrite=False, log=None):
    """Writes and verifies the LiteRT model of `directory`'s serving_default; a Result.

    Refused (UserError, nothing written): a bad flag, an output that exists and
    is not ours, a serving_default that is not builtins-only, or (quantize
    "none") a LiteRT model that differs from the SavedModel.
    """
    if quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize={quantize} is unknown; allowed: {', '.join(QUANTIZATIONS)}")
    if quantize == "int8" and not representative_images:
        raise UserError("--quantize=int8 calibrates on images: pass "
                        "--representative_images=DIR, a folder of JPEG/PNG/GIF/BMP files")
    given = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isfile(os.path.join(given, "saved_model.pb")):
        raise UserError(f"{directory} is not a SavedModel directory (no saved_model.pb); "
                        "pass the directory hubexport export wrote")
    output = os.path.abspath(os.path.expanduser(output or given + SUFFIX))
    card = card_path(output)
    _check_output(output, card, given, overwrite)
    interpreter = interpreter_class()
    import tensorflow as tf
    from hubexport import export

    model = tf.saved_model.load(given)
    signature = serving_signature(model)
    provenance = export.load_provenance(given)
    hw = fixed_size(signature, provenance, image_size)
    images, source = (load_images(representative_images, hw) if representative_images
                      else (random_images(RANDOM_IMAGES, hw), "random"))
    if log:
        log(f"converting serving_default at {hw[0]}x{hw[1]} (quantize={quantize})")
    data = convert_signature(model, signature, hw, quantize, images)
    comparison = compare(data, signature, images, source, _task(signature), interpreter)
    if quantize == "none" and not comparison.relative_difference <= contract.VERIFICATION_TOLERANCE:
        raise UserError(
            f"the LiteRT model differs from the SavedModel by {comparison.relative_difference:.2e} "
            f"relative on {comparison.images} images (tolerance "
            f"{contract.VERIFICATION_TOLERANCE:g}): the conversion failed verification, "
            f"nothing was written")
    summary = summary_line(output, len(data), quantize, hw, comparison)
    info = card_json(given, output, data, quantize, hw, comparison, provenance)
    _install(output, card, data, info, overwrite)
    return Result(output, card, comparison, summary)


# --- The conversion -----------------------------------------------------------


def serving_signature(model):
    signature = model.signatures.get(contract.SERVING_DEFAULT)
    if signature is None:
        raise UserError("the SavedModel has no serving_default signature, the one LiteRT "
                        "conversion takes (HUB_CONTRACT.md K3)")
    inputs = signature.structured_input_signature[1]
    if list(inputs) != ["images"] or len(signature.structured_outputs) != 1:
        raise UserError("serving_default must take `images` and return one output "
                        "(HUB_CONTRACT.md K3); see hubexport check")
    return signature


def fixed_size(signature, provenance, image_size=None):
    """(height, width) to convert at: the signature's, else image_size, else the provenance's."""
    shape = signature.structured_input_signature[1]["images"].shape
    height, width = shape[1], shape[2]
    if height and width:
        if image_size and (image_size, image_size) != (height, width):
            raise UserError(f"--image_size={image_size}, but serving_default is fixed at "
                            f"{height}x{width}; leave --image_size out")
        return (height, width)
    if image_size:
        return (image_size, image_size)
    size = provenance.image_size
    if isinstance(size, int) and size > 0:
        return (size, size)
    if isinstance(size, list) and len(size) == 2:
        return tuple(size)
    raise UserError("serving_default takes any height and width and the model has no "
                    "provenance image_size; pass --image_size=N (LiteRT needs one size)")


def _task(signature):
    key, = signature.structured_outputs
    return "classification" if key == contract.OUTPUT_KEYS["classification"] else "feature_vector"


def convert_signature(model, signature, hw, quantize="none", images=None):
    """The .tflite bytes of `signature` at `hw` (batch free), builtin ops only.

    Raises NotBuiltin naming the ops the converter could not map, UserError
    for another conversion failure.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *hw, 3], tf.float32, name="images")
    function = tf.function(lambda images: signature(images=images), input_signature=[spec],
                           autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    captured = _Captured()  # What the converter printed, if it fails.
    try:
        with _captured_stderr() as captured:
            return converter.convert()
    except Exception as e:  # tf.lite's ConverterError, or an error while freezing.
        ops = non_builtin_ops(str(e) + "\n" + captured.text)
        if ops:
            raise NotBuiltin(
                f"serving_default does not convert to LiteRT builtin ops: it needs "
                f"{', '.join(ops)} (TF Select/Flex ops, not supported here)", ops) from None
        raise UserError(f"serving_default does not convert to LiteRT: "
                        f"{type(e).__name__}: {summarize(_last_error(str(e)))}") from None


class _Captured:
    text = ""


@contextlib.contextmanager
def _captured_stderr():
    """File descriptor 2 into a temporary file while the converter runs.

    The converter's C++ prints every MLIR diagnostic (a screenful of source
    locations per op it cannot map) and its quantization settings there; the
    one-line refusal says what matters. The text is kept for the op names.
    """
    import sys
    import tempfile

    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            captured.text = scratch.read().decode("utf-8", "replace")


_OPS_LINE = re.compile(r"^(?:TF Select|Flex|Custom) ops: (.+)$", re.MULTILINE)
_NOT_FLEX = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def non_builtin_ops(message):
    """The op names a converter error lists as not builtin, sorted (empty: none listed)."""
    ops = {op.strip() for line in _OPS_LINE.findall(message) for op in line.split(",")}
    ops |= set(_NOT_FLEX.findall(message))
    return sorted(op for op in ops if op)


def _last_error(message):
    """The converter's own `error:` line (its message starts with MLIR locations)."""
    errors = [line.split("error:", 1)[1] for line in message.splitlines() if "error:" in line]
    return errors[-1] if errors else message


# --- The comparison ------------------------------------------------------------


def random_images(count, hw):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, (count, *hw, 3)).astype(np.float32)


def load_images(directory, hw):
    """The image files of `directory`, decoded and resized as serving_image_bytes does."""
    import numpy as np
    import tensorflow as tf

    from hubexport import serving

    if not os.path.isdir(directory):
        raise UserError(f"--representative_images={directory} is not a directory; pass a "
                        "folder of JPEG/PNG/GIF/BMP files")
    names = sorted(n for n in os.listdir(directory)
                   if not n.startswith(".") and os.path.isfile(os.path.join(directory, n)))
    if not names:
        raise UserError(f"--representative_images={directory} holds no files; put a few "
                        "JPEG/PNG/GIF/BMP images in it")
    images = []
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        try:
            images.append(serving.resize(serving.decode(tf.constant(data)), hw).numpy())
        except (tf.errors.InvalidArgumentError, ValueError):
            raise UserError(f"{path} is not an image TensorFlow decodes; "
                            "--representative_images takes only JPEG, PNG, GIF or BMP "
                            "files") from None
    return np.stack(images).astype(np.float32), directory


def run_interpreter(data, images, interpreter):
    """The LiteRT model's one output on each image (batch 1), stacked."""
    import numpy as np

    runner = interpreter(model_content=data).get_signature_runner(contract.SERVING_DEFAULT)
    outputs = []
    for image in images:
        (value,) = runner(images=image[None]).values()
        outputs.append(value[0])
    return np.stack(outputs)


def compare(data, signature, images, source, task, interpreter):
    """A Comparison of the LiteRT model with `signature` on `images`."""
    import numpy as np
    import tensorflow as tf

    from hubexport import export

    actual = run_interpreter(data, images, interpreter)
    (expected,) = (v.numpy() for v in signature(images=tf.constant(images)).values())
    difference = export.relative_difference(actual, expected)
    if task != "classification":
        return Comparison(len(images), source, difference)
    top = expected.argmax(axis=1)
    best5 = np.argsort(-actual, axis=1)[:, :5]
    return Comparison(len(images), source, difference,
                      top1=float(np.mean(actual.argmax(axis=1) == top)),
                      top5=float(np.mean([t in row for t, row in zip(top, best5)])))


def megabytes(size):
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def summary_line(output, size, quantize, hw, comparison):
    where = ("random images" if comparison.image_source == "random"
             else f"images of {comparison.image_source}")
    line = (f"{output}: LiteRT serving_default at {hw[0]}x{hw[1]} (batch free), "
            f"quantize={quantize}, {megabytes(size)}; relative difference "
            f"{comparison.relative_difference:.2e} vs the SavedModel on "
            f"{comparison.images} {where}")
    if quantize == "none":
        line += f" (tolerance {contract.VERIFICATION_TOLERANCE:g})"
    if comparison.top1 is not None:
        line += f", top-1 agreement {comparison.top1:.0%}, top-5 agreement {comparison.top5:.0%}"
    return line


# --- The card and the files -------------------------------------------------------


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


def _check_output(output, card, source, overwrite):
    if not output.endswith(SUFFIX):
        raise UserError(f"--output={output} must end with {SUFFIX}; e.g. {source}{SUFFIX}")
    real = os.path.realpath(output)
    if os.path.commonpath([real, os.path.realpath(source)]) == os.path.realpath(source):
        raise UserError(f"--output={output} is inside the SavedModel; write it beside it "
                        "(the default) or elsewhere")
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the directory of --output={output} does not exist; create it first")
    _check_replaceable(output, card, overwrite)


def _check_replaceable(output, card, overwrite):
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


def _install(output, card, data, info, overwrite):
    """Writes both files beside the output, then moves them into place (tflite first)."""
    with atomic.replacing(card + ".new") as f:  # Complete before anything is replaced.
        json.dump(info, f, indent=1)
        f.write("\n")
    try:
        _check_replaceable(output, card, overwrite)  # It may have changed meanwhile.
        with atomic.replacing(output, "wb") as f:
            f.write(data)
        os.replace(card + ".new", card)
    finally:
        if os.path.exists(card + ".new"):
            os.remove(card + ".new")
