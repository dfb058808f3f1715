"""serving_default -> .tflite bytes with TFLite builtin ops only (hubexport.publish.litert).

Only `serving_default` converts: the raw-image signatures decode strings and
resize images of any size, which LiteRT runs only with the Flex delegate.
Height and width are fixed (LiteRT plans its buffers for one size), batch
stays free. A serving_default that needs other ops is refused naming them,
with the converter's screenful of MLIR diagnostics held back.
"""

import contextlib
import os
import re

from hubexport import contract
from hubexport.errors import UserError, is_interrupt, summarize
from hubexport.contract import CLASSIFICATION, FEATURE_VECTOR


class NotBuiltin(UserError):
    """serving_default needs ops that are not TFLite builtins; .ops names them."""

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = ops


def serving_signature(model):
    signature = model.signatures.get(contract.SERVING_DEFAULT)
    if signature is None:
        raise UserError("the SavedModel has no serving_default signature, the one LiteRT "
                        "conversion takes (HUB_CONTRACT.md K3)")
    inputs = signature.structured_input_signature[1]
    if list(inputs) != ["images"] or len(signature.structured_outputs) != 1:
        raise UserError("serving_default must take `images` and return one output "
                        "(HUB_CONTRACT.md K3); see hubexport check")
    spec = inputs["images"]
    if spec.dtype.name != "float32" or spec.shape.rank != 4 or spec.shape[-1] != 3:
        raise UserError(f"serving_default takes {spec.dtype.name} images of shape {spec.shape}; "
                        "LiteRT conversion takes float32 [batch, height, width, 3] "
                        "(HUB_CONTRACT.md C1, K3); see hubexport check")
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


def task_of(signature):
    """"classification" when serving_default returns logits (top-1/top-5 apply), else
    "feature_vector"."""
    key, = signature.structured_outputs
    return CLASSIFICATION if key == contract.OUTPUT_KEYS[CLASSIFICATION] else FEATURE_VECTOR


def convert_signature(model, signature, hw, quantize="none", images=None):
    """The .tflite bytes of `signature` at `hw` (batch free), builtin ops only.

    Raises NotBuiltin naming the ops the converter could not map, UserError
    for another conversion failure. A Ctrl-C comes back from the converter's
    C++ as a RuntimeError; it goes on up as it came (errors.is_interrupt), not
    as "does not convert".
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
        if is_interrupt(e):
            raise
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
