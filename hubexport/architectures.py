"""The one table of architecture facts, and the rules that follow from it.

Every row was measured on the library that builds it: Keras 3 for its 40
applications, tf_keras for the 31 that only tf_keras ships (RegNetX/Y,
ResNetRS). tests/test_architectures.py rebuilds every row and fails if the
table is wrong:

  preprocessing  what `<library>.applications.<module>.preprocess_input` does,
                 as a mode of hubexport.preprocessing ("raw255" = the model
                 rescales 0..255 input itself).
  default_size   the input size of the ImageNet weights (and of the classifier
                 that Keras builds when no size is given; not for ResNetRS,
                 built at 224 but with weights for 160 to 320).
  min_size       the smallest height and width Keras accepts.
  free_size      whether a feature vector model built with height and width
                 None runs at every size >= min_size with the same output size.
                 NASNet does not (its cells mismatch on some sizes), so it is
                 exported at one fixed size.
  num_features   the size of the globally average-pooled feature vector.
  imagenet_head_fixed
                 whether Keras builds the ImageNet classifier only at
                 default_size (all but MobileNetV3, whose head is
                 convolutional and takes the 224 weights at any size, and
                 ResNetRS, whose average pool and Dense take any size).
  params, layers the size of the ImageNet classifier that Keras builds at
                 default_size (millions of parameters, and model.layers); the
                 batch estimates (batch/estimates.py) take memory and time from them.
  library        "keras" or "tf_keras": which one builds the model.
  tfhub          the id of the architecture in tfhub.dev's
                 tags/network_architecture.yaml, for the model card's
                 `network-architecture` line; None where no id fits
                 (ConvNeXt, DenseNet, VGG, Xception, RegNet, ResNetRS).

This module does not import TensorFlow, so the CLI can validate flags and print
help without paying for it.
"""

import dataclasses

from hubexport import names
from hubexport.contract import CLASSIFICATION, FEATURE_VECTOR, TASKS

IMAGENET_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str  # The constructor: keras.applications.<name>.
    module: str  # keras.applications.<module> has its preprocess_input.
    preprocessing: str
    default_size: int
    min_size: int
    free_size: bool
    num_features: int
    params: float  # Millions, of the ImageNet classifier at default_size.
    layers: int  # Of that classifier (Keras' model.layers).
    imagenet_head_fixed: bool = True
    library: str = "keras"  # "keras" (Keras 3) or "tf_keras" (only it ships the model).
    tfhub: str | None = None  # tfhub.dev's network-architecture tag; None where none fits.

    def keras_module(self):
        """The module that builds this architecture: keras or tf_keras."""
        import importlib

        return importlib.import_module(self.library)

    def constructor(self):
        return getattr(self.keras_module().applications, self.name)

    def reference_preprocess_input(self):
        """Keras' own preprocess_input for this architecture (0..255 RGB in)."""
        import importlib

        return importlib.import_module(
            f"{self.library}.applications.{self.module}"
        ).preprocess_input

    def input_hw(self, task, image_size):
        """(height, width) of the exported signature; None where free."""
        if task == FEATURE_VECTOR and self.free_size:
            return (None, None)
        return (image_size, image_size)

    def output_size(self, task):
        return self.num_features if task == FEATURE_VECTOR else IMAGENET_CLASSES

    def size_problem(self, task, image_size, imagenet):
        """Why Keras would refuse this size, or None if it accepts it."""
        if image_size < self.min_size:
            return (
                f"--image_size={image_size} is below the minimum of {self.name}; "
                f"allowed: {self.min_size} or more (default {self.default_size})"
            )
        if (
            task == CLASSIFICATION
            and imagenet
            and self.imagenet_head_fixed
            and image_size != self.default_size
        ):
            return (
                f"--image_size={image_size} does not fit the ImageNet classifier "
                f"of {self.name}; allowed with --weights=imagenet: "
                f"{self.default_size} (other sizes need --weights=none or a "
                "weights file, or --task=feature_vector)"
            )
        return None


def _row(name, module, preprocessing, default_size, min_size, free, features, params,
         layers, tfhub, imagenet_head_fixed=True, library="keras"):
    return Architecture(name, module, preprocessing, default_size, min_size,
                        free, features, params, layers, imagenet_head_fixed, library, tfhub)


# fmt: off
ARCHITECTURES = {a.name: a for a in [
    #    name                 module                 prep     size min  free   features params layers tfhub                 head_fixed
    _row("ConvNeXtTiny",      "convnext",            "raw255", 224, 32, True,  768,   28.6,  135, None),
    _row("ConvNeXtSmall",     "convnext",            "raw255", 224, 32, True,  768,   50.2,  261, None),
    _row("ConvNeXtBase",      "convnext",            "raw255", 224, 32, True,  1024,   88.6,  261, None),
    _row("ConvNeXtLarge",     "convnext",            "raw255", 224, 32, True,  1536,  197.8,  261, None),
    _row("ConvNeXtXLarge",    "convnext",            "raw255", 224, 32, True,  2048,  350.2,  261, None),
    _row("DenseNet121",       "densenet",            "torch",  224, 32, True,  1024,    8.1,  429, None),
    _row("DenseNet169",       "densenet",            "torch",  224, 32, True,  1664,   14.3,  597, None),
    _row("DenseNet201",       "densenet",            "torch",  224, 32, True,  1920,   20.2,  709, None),
    _row("EfficientNetB0",    "efficientnet",        "raw255", 224, 32, True,  1280,    5.3,  240, "efficientnet-b0"),
    _row("EfficientNetB1",    "efficientnet",        "raw255", 240, 32, True,  1280,    7.9,  342, "efficientnet-b1"),
    _row("EfficientNetB2",    "efficientnet",        "raw255", 260, 32, True,  1408,    9.2,  342, "efficientnet-b2"),
    _row("EfficientNetB3",    "efficientnet",        "raw255", 300, 32, True,  1536,   12.3,  387, "efficientnet-b3"),
    _row("EfficientNetB4",    "efficientnet",        "raw255", 380, 32, True,  1792,   19.5,  477, "efficientnet-b4"),
    _row("EfficientNetB5",    "efficientnet",        "raw255", 456, 32, True,  2048,   30.6,  579, "efficientnet-b5"),
    _row("EfficientNetB6",    "efficientnet",        "raw255", 528, 32, True,  2304,   43.3,  669, "efficientnet-b6"),
    _row("EfficientNetB7",    "efficientnet",        "raw255", 600, 32, True,  2560,   66.7,  816, "efficientnet-b7"),
    _row("EfficientNetV2B0",  "efficientnet_v2",     "raw255", 224, 32, True,  1280,    7.2,  273, "efficientnet-v2"),
    _row("EfficientNetV2B1",  "efficientnet_v2",     "raw255", 240, 32, True,  1280,    8.2,  337, "efficientnet-v2"),
    _row("EfficientNetV2B2",  "efficientnet_v2",     "raw255", 260, 32, True,  1408,   10.2,  352, "efficientnet-v2"),
    _row("EfficientNetV2B3",  "efficientnet_v2",     "raw255", 300, 32, True,  1536,   14.5,  412, "efficientnet-v2"),
    _row("EfficientNetV2S",   "efficientnet_v2",     "raw255", 384, 32, True,  1280,   21.6,  516, "efficientnet-v2"),
    _row("EfficientNetV2M",   "efficientnet_v2",     "raw255", 480, 32, True,  1280,   54.4,  743, "efficientnet-v2"),
    _row("EfficientNetV2L",   "efficientnet_v2",     "raw255", 480, 32, True,  1280,  119.0, 1031, "efficientnet-v2"),
    _row("InceptionResNetV2", "inception_resnet_v2", "tf",     299, 75, True,  1536,   55.9,  782, "inception-resnet-v2"),
    _row("InceptionV3",       "inception_v3",        "tf",     299, 75, True,  2048,   23.9,  313, "inception-v3"),
    _row("MobileNet",         "mobilenet",           "tf",     224, 32, True,  1024,    4.3,   91, "mobilenet-v1"),
    _row("MobileNetV2",       "mobilenet_v2",        "tf",     224, 32, True,  1280,    3.5,  156, "mobilenet-v2"),
    _row("MobileNetV3Small",  "mobilenet_v3",        "raw255", 224, 32, True,  576,    2.6,  164, "mobilenet-v3",        False),
    _row("MobileNetV3Large",  "mobilenet_v3",        "raw255", 224, 32, True,  960,    5.5,  194, "mobilenet-v3",        False),
    _row("NASNetMobile",      "nasnet",              "tf",     224, 32, False, 1056,    5.3,  771, "nasnet-a-mobile"),
    _row("NASNetLarge",       "nasnet",              "tf",     331, 32, False, 4032,   88.9, 1041, "nasnet-a-large"),
    _row("ResNet50",          "resnet",              "caffe",  224, 32, True,  2048,   25.6,  177, "resnet-v1-50"),
    _row("ResNet101",         "resnet",              "caffe",  224, 32, True,  2048,   44.7,  347, "resnet-v1-101"),
    _row("ResNet152",         "resnet",              "caffe",  224, 32, True,  2048,   60.4,  517, "resnet-v1-152"),
    _row("ResNet50V2",        "resnet_v2",           "tf",     224, 32, True,  2048,   25.6,  192, "resnet-v2-50"),
    _row("ResNet101V2",       "resnet_v2",           "tf",     224, 32, True,  2048,   44.7,  379, "resnet-v2-101"),
    _row("ResNet152V2",       "resnet_v2",           "tf",     224, 32, True,  2048,   60.4,  566, "resnet-v2-152"),
    _row("VGG16",             "vgg16",               "caffe",  224, 32, True,  512,  138.4,   23, None),
    _row("VGG19",             "vgg19",               "caffe",  224, 32, True,  512,  143.7,   26, None),
    _row("Xception",          "xception",            "tf",     299, 71, True,  2048,   22.9,  134, None),
    # Only tf_keras ships these (Keras 3 does not). Both families rescale
    # inside the model; their preprocess_input is the identity. RegNet's head
    # is a plain Dense: it ignores classifier_activation and always gives
    # logits. ResNetRS takes weights="imagenet" to mean its largest weights
    # variant (resnet-rs-<depth>-i<size>.h5); default_size is that size, not
    # the 224 it builds when no size is given. Its head (average pool, Dense)
    # takes those weights at any size: Keras checks the size only for
    # weights == "imagenet", which ResNetRS has renamed by then. All ran free
    # at 32, 33, 45x38, 47x61, 64 and 97. features is the width of the last
    # stage, so it does not grow with the model (RegNetX160 < X120, Y040 < Y032).
    #    name                 module       prep     size min  free   features params layers tfhub head_fixed library
    _row("RegNetX002",        "regnet",    "raw255", 224, 32, True,  368,    2.7,  145, None,  True,  "tf_keras"),
    _row("RegNetX004",        "regnet",    "raw255", 224, 32, True,  384,    5.2,  235, None,  True,  "tf_keras"),
    _row("RegNetX006",        "regnet",    "raw255", 224, 32, True,  528,    6.2,  175, None,  True,  "tf_keras"),
    _row("RegNetX008",        "regnet",    "raw255", 224, 32, True,  672,    7.3,  175, None,  True,  "tf_keras"),
    _row("RegNetX016",        "regnet",    "raw255", 224, 32, True,  912,    9.2,  195, None,  True,  "tf_keras"),
    _row("RegNetX032",        "regnet",    "raw255", 224, 32, True,  1008,   15.4,  265, None,  True,  "tf_keras"),
    _row("RegNetX040",        "regnet",    "raw255", 224, 32, True,  1360,   22.2,  245, None,  True,  "tf_keras"),
    _row("RegNetX064",        "regnet",    "raw255", 224, 32, True,  1624,   26.3,  185, None,  True,  "tf_keras"),
    _row("RegNetX080",        "regnet",    "raw255", 224, 32, True,  1920,   39.7,  245, None,  True,  "tf_keras"),
    _row("RegNetX120",        "regnet",    "raw255", 224, 32, True,  2240,   46.2,  205, None,  True,  "tf_keras"),
    _row("RegNetX160",        "regnet",    "raw255", 224, 32, True,  2048,   54.4,  235, None,  True,  "tf_keras"),
    _row("RegNetX320",        "regnet",    "raw255", 224, 32, True,  2520,  108.0,  245, None,  True,  "tf_keras"),
    _row("RegNetY002",        "regnet",    "raw255", 224, 32, True,  368,    3.2,  197, None,  True,  "tf_keras"),
    _row("RegNetY004",        "regnet",    "raw255", 224, 32, True,  440,    4.4,  239, None,  True,  "tf_keras"),
    _row("RegNetY006",        "regnet",    "raw255", 224, 32, True,  608,    6.1,  225, None,  True,  "tf_keras"),
    _row("RegNetY008",        "regnet",    "raw255", 224, 32, True,  768,    6.3,  211, None,  True,  "tf_keras"),
    _row("RegNetY016",        "regnet",    "raw255", 224, 32, True,  888,   11.3,  393, None,  True,  "tf_keras"),
    _row("RegNetY032",        "regnet",    "raw255", 224, 32, True,  1512,   19.5,  309, None,  True,  "tf_keras"),
    _row("RegNetY040",        "regnet",    "raw255", 224, 32, True,  1088,   20.7,  323, None,  True,  "tf_keras"),
    _row("RegNetY064",        "regnet",    "raw255", 224, 32, True,  1296,   30.7,  365, None,  True,  "tf_keras"),
    _row("RegNetY080",        "regnet",    "raw255", 224, 32, True,  2016,   39.3,  253, None,  True,  "tf_keras"),
    _row("RegNetY120",        "regnet",    "raw255", 224, 32, True,  2240,   51.9,  281, None,  True,  "tf_keras"),
    _row("RegNetY160",        "regnet",    "raw255", 224, 32, True,  3024,   83.7,  267, None,  True,  "tf_keras"),
    _row("RegNetY320",        "regnet",    "raw255", 224, 32, True,  3712,  145.2,  295, None,  True,  "tf_keras"),
    _row("ResNetRS50",        "resnet_rs", "raw255", 160, 32, True,  2048,   35.7,  274, None,  False, "tf_keras"),
    _row("ResNetRS101",       "resnet_rs", "raw255", 192, 32, True,  2048,   63.7,  529, None,  False, "tf_keras"),
    _row("ResNetRS152",       "resnet_rs", "raw255", 256, 32, True,  2048,   86.8,  784, None,  False, "tf_keras"),
    _row("ResNetRS200",       "resnet_rs", "raw255", 256, 32, True,  2048,   93.4, 1090, None,  False, "tf_keras"),
    _row("ResNetRS270",       "resnet_rs", "raw255", 256, 32, True,  2048,  130.1, 1474, None,  False, "tf_keras"),
    _row("ResNetRS350",       "resnet_rs", "raw255", 320, 32, True,  2048,  164.3, 1890, None,  False, "tf_keras"),
    _row("ResNetRS420",       "resnet_rs", "raw255", 320, 32, True,  2048,  192.3, 2258, None,  False, "tf_keras"),
]}
# fmt: on


def lookup(name):
    """The row for `name`; a UserError naming the closest rows if unknown."""
    from hubexport.errors import UserError

    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    by_lower = {n.lower(): n for n in ARCHITECTURES}
    if name.lower() in by_lower:
        return ARCHITECTURES[by_lower[name.lower()]]
    hint = names.did_you_mean(name, ARCHITECTURES)
    raise UserError(
        f"Unknown architecture {name!r}; {hint}"
        f"allowed: {', '.join(sorted(ARCHITECTURES))}"
    )


def check_task(task):
    from hubexport.errors import UserError

    if task not in TASKS:
        raise UserError(
            f"Unknown task {task!r}; allowed: {', '.join(TASKS)} "
            "(for example --task=feature_vector)"
        )
    return task
