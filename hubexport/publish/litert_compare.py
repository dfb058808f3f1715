"""The LiteRT model against the SavedModel on the same images (hubexport.publish.litert).

The images are --representative_images, decoded and resized as the
export's serving_image_bytes does (hubexport.serving), else a few seeded
random ones. The LiteRT model runs one image at a time (batch 1, as a
device does); the SavedModel in batches of BATCH, so that a folder of a few
hundred calibration photos does not become one batch that fills memory.
"""

import dataclasses
import os

from hubexport import contract
from hubexport.errors import UserError
from hubexport.contract import CLASSIFICATION

BATCH = 32  # Images per SavedModel call.


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The LiteRT model's outputs against the SavedModel's on the same images."""

    images: int
    image_source: str  # "random" or the --representative_images directory.
    relative_difference: float
    top1: float | None = None  # Classification only: fraction of images.
    top5: float | None = None


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


def saved_model_outputs(signature, images, batch=BATCH):
    """`signature`'s one output on `images`, called on at most `batch` at a time."""
    import numpy as np
    import tensorflow as tf

    parts = []
    for start in range(0, len(images), batch):
        (value,) = signature(images=tf.constant(images[start:start + batch])).values()
        parts.append(value.numpy())
    return np.concatenate(parts)


def outputs(data, signature, images, interpreter):
    """(the LiteRT model's, the SavedModel's) outputs on `images`."""
    return run_interpreter(data, images, interpreter), saved_model_outputs(signature, images)


def compare(data, signature, images, source, task, interpreter):
    """A Comparison of the LiteRT model with `signature` on `images`."""
    import numpy as np
    actual, expected = outputs(data, signature, images, interpreter)
    difference = contract.relative_difference(actual, expected)
    if task != CLASSIFICATION:
        return Comparison(len(images), source, difference)
    top = expected.argmax(axis=1)
    best5 = np.argsort(-actual, axis=1)[:, :5]
    return Comparison(len(images), source, difference,
                      top1=float(np.mean(actual.argmax(axis=1) == top)),
                      top5=float(np.mean([t in row for t, row in zip(top, best5)])))
