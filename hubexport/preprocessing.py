"""Maps images in [0, 1] to what each family of models expects.

Every exported model takes float32 RGB images in [0, 1] (HUB_CONTRACT C1). The
Keras applications expect one of these inputs (keras.applications.*.
preprocess_input applied to 0..255 RGB):

    caffe   BGR, 0..255, ImageNet mean subtracted per channel (VGG, ResNet).
    tf      RGB scaled to [-1, 1] (MobileNet/V2, Inception, Xception, NASNet,
                    ResNetV2).
    torch   RGB in [0, 1], normalized by ImageNet mean and std (DenseNet).
    raw255  RGB in 0..255; the model rescales inside (EfficientNet/V2,
                    ConvNeXt, MobileNetV3, RegNet, ResNetRS).
    unit    RGB in [0, 1] as it is (own models trained on [0, 1]).

Importing this module does not import TensorFlow (the CLI validates
--preprocessing against MODES before loading it).
"""

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

MODES = ("caffe", "tf", "torch", "raw255", "unit")


def _caffe(images):
    import tensorflow as tf

    bgr = tf.reverse(images, axis=[-1]) * 255.0
    return bgr - tf.constant(_CAFFE_MEAN_BGR, dtype=images.dtype)


def _tf(images):
    return images * 2.0 - 1.0


def _torch(images):
    import tensorflow as tf

    mean = tf.constant(_TORCH_MEAN, dtype=images.dtype)
    std = tf.constant(_TORCH_STD, dtype=images.dtype)
    return (images - mean) / std


def _raw255(images):
    return images * 255.0


def _unit(images):
    return images


_FUNCTIONS = {
        "caffe": _caffe,
        "tf": _tf,
        "torch": _torch,
        "raw255": _raw255,
        "unit": _unit,
}


def preprocess(images, mode):
    """Returns `images` (float, [0, 1], RGB, channels last) as `mode` wants."""
    try:
        return _FUNCTIONS[mode](images)
    except KeyError:
        raise ValueError(
                f"Expected preprocessing to be one of {', '.join(MODES)}. "
                f"Received: {mode!r}") from None
