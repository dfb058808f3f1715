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
and moved into place after verification; a failure leaves neither.

The work is in three modules of one concern each, whose names are
importable from here: litert_convert (serving_default -> .tflite bytes),
litert_compare (the LiteRT model against the SavedModel), litert_files
(where the output may go, its card, the install).
"""

import dataclasses
import os

from hubexport import contract
from hubexport.errors import UserError
from hubexport.publish.litert_compare import (BATCH, Comparison, compare,  # noqa: F401
                                              load_images, outputs, random_images,
                                              run_interpreter, saved_model_outputs)
from hubexport.publish.litert_convert import (NotBuiltin, convert_signature,  # noqa: F401
                                              fixed_size, non_builtin_ops, serving_signature,
                                              task_of)
from hubexport.publish.litert_files import (CARD_FORMAT, SUFFIX, card_json,  # noqa: F401
                                            card_path, check_output, check_replaceable,
                                            install, written_by_litert)

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
EXTRA = 'pip install -e ".[litert]"'
RANDOM_IMAGES = 4  # Images compared without --representative_images.


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
    if image_size is not None and image_size < 1:
        raise UserError(f"--image_size={image_size} is not a size; pass a positive number of "
                        "pixels (e.g. 224), or leave it out for the signature's or the "
                        "export's own size")
    if quantize == "int8" and not representative_images:
        raise UserError("--quantize=int8 calibrates on images: pass "
                        "--representative_images=DIR, a folder of JPEG/PNG/GIF/BMP files")
    given = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isfile(os.path.join(given, "saved_model.pb")):
        raise UserError(f"{directory} is not a SavedModel directory (no saved_model.pb); "
                        "pass the directory hubexport export wrote")
    output = os.path.abspath(os.path.expanduser(output or given + SUFFIX))
    card = card_path(output)
    check_output(output, card, given, overwrite)
    interpreter = interpreter_class()
    import tensorflow as tf
    model = tf.saved_model.load(given)
    signature = serving_signature(model)
    provenance = contract.load_provenance(given)
    hw = fixed_size(signature, provenance, image_size)
    images, source = (load_images(representative_images, hw) if representative_images
                      else (random_images(RANDOM_IMAGES, hw), "random"))
    if log:
        log(f"converting serving_default at {hw[0]}x{hw[1]} (quantize={quantize})")
    data = convert_signature(model, signature, hw, quantize, images)
    comparison = compare(data, signature, images, source, task_of(signature), interpreter)
    if quantize == "none" and not comparison.relative_difference <= contract.VERIFICATION_TOLERANCE:
        raise UserError(
            f"the LiteRT model differs from the SavedModel by {comparison.relative_difference:.2e} "
            f"relative on {comparison.images} images (tolerance "
            f"{contract.VERIFICATION_TOLERANCE:g}): the conversion failed verification, "
            f"nothing was written")
    summary = summary_line(output, len(data), quantize, hw, comparison)
    info = card_json(given, output, data, quantize, hw, comparison, provenance)
    install(output, card, data, info, overwrite)
    return Result(output, card, comparison, summary)


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
