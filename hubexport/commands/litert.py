"""`hubexport litert DIR`: serving_default converted to LiteRT (TFLite) and
verified against the SavedModel (hubexport.publish.litert)."""

from absl import flags

from hubexport import startup
from hubexport.commands.shared import IMAGE_SIZE, OUTPUT, OVERWRITE, say
from hubexport.errors import UserError

_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", ["none", "dynamic", "float16", "int8"],
    "litert: none (float32, verified to 1e-4 against the SavedModel), dynamic (int8 "
    "weights), float16 (float16 weights) or int8 (integer kernels, calibrated on "
    "--representative_images; float32 input and output); quantized models report "
    "their difference and, for classification, top-1 and top-5 agreement.")
_REPRESENTATIVE_IMAGES = flags.DEFINE_string(
    "representative_images", None,
    "litert: a folder of JPEG/PNG/GIF/BMP files, decoded and resized as "
    "serving_image_bytes does; compared on (default: 4 random images) and, for "
    "--quantize=int8 (required there), calibrated on.")

FLAG_NAMES = {"output", "overwrite", "quantize", "representative_images", "image_size"}


def run(paths):
    if len(paths) != 1:
        raise UserError(
            f"litert takes one SavedModel directory; received {len(paths)} "
            "(e.g. hubexport litert models/mobilenet_v2)")
    from hubexport.publish import litert

    litert.interpreter_class()  # The missing extra is refused before TensorFlow loads.
    startup.quiet_tensorflow()
    result = litert.convert(paths[0], OUTPUT.value, _QUANTIZE.value,
                            _REPRESENTATIVE_IMAGES.value, IMAGE_SIZE.value,
                            overwrite=OVERWRITE.value, log=say)
    print(result.summary)
    return 0
