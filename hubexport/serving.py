"""Signatures beyond serving_default: labels out, and raw images in.

  top_k(images)                      {"labels": string [batch, k],
                                      "confidences": float32 [batch, k]}
      for classification exports with labels: the k most confident classes,
      by softmax of the logits, or by sigmoid for multi-label models (each
      class independent), most confident first.
  serving_image_bytes(image_bytes)   encoded JPEG/PNG/GIF/BMP, one string per
                                     image, any size
  serving_uint8(images)              uint8 RGB [batch, height, width, 3], any size
      both convert to [0, 1] floats, resize to the export's image size
      (bilinear, antialiased) and return serving_default's outputs, plus
      top_k's when the export has labels.

The input key `image_bytes` ends in `_bytes`, so TF Serving's REST API takes
it as {"b64": "..."}.
"""

import tensorflow as tf

# How close a confidence must be to its class's value (and so to a tied class's).
from hubexport.contract import TOP_K_ATOL, TOP_K_CONFIDENCES, TOP_K_LABELS, TOP_K_RTOL

ACTIVATIONS = {"softmax": tf.nn.softmax, "sigmoid": tf.math.sigmoid}


def top_k_function(call, spec, labels, k, activation):
    """top_k(images) over `call(images, training=False)` logits."""
    table = tf.constant(list(labels), dtype=tf.string)
    probabilities = ACTIVATIONS[activation]

    def top_k(images):
        confidences, indices = tf.math.top_k(probabilities(call(images, training=False)), k)
        return {TOP_K_LABELS: tf.gather(table, indices), TOP_K_CONFIDENCES: confidences}

    return tf.function(top_k, input_signature=[spec], autograph=False)


def top_k_mismatch(logits, labels, activation, confidences, names):
    """Whether top_k's outputs fit `logits`: None, "confidences" or "labels".

    confidences must be the k largest `activation` values of the logits, in
    order, and names the `labels` of k distinct classes whose values are those
    confidences. A class whose value is within the tolerance of a confidence
    is tied with the class top_k found there, so either label will do (past
    the k-th place too); no other label will. Shared by the export's
    verification and the check.
    """
    import numpy as np

    probabilities = ACTIVATIONS[activation](logits).numpy()
    wanted = -np.sort(-probabilities, axis=1)[:, : confidences.shape[1]]
    if confidences.shape != wanted.shape or not np.allclose(
            confidences, wanted, rtol=TOP_K_RTOL, atol=TOP_K_ATOL):
        return "confidences"
    labels = np.array([str(label) for label in labels])
    for row, given, named in zip(probabilities, confidences, names):
        if not _distinct_representatives(_candidates(row, labels, given, named)):
            return "labels"
    return None


def _candidates(probabilities, labels, confidences, names):
    """For each place of one top_k row: the classes it may name (label and value fit)."""
    import numpy as np

    return [
        np.flatnonzero((labels == _text(name)) & np.isclose(
            confidence, probabilities, rtol=TOP_K_RTOL, atol=TOP_K_ATOL))
        for confidence, name in zip(confidences, names)
    ]


def _text(name):
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _distinct_representatives(candidates):
    """Whether every place can have a class of its own among its candidates.

    Kuhn's augmenting paths: naming one class twice is wrong even when two
    classes are tied; naming the two tied classes in either order is not.
    """
    owner = {}

    def claim(place, seen):
        for candidate in candidates[place]:
            if candidate not in seen:
                seen.add(candidate)
                if candidate not in owner or claim(owner[candidate], seen):
                    owner[candidate] = place
                    return True
        return False

    return all(claim(place, set()) for place in range(len(candidates)))


def resize(images, size):
    """uint8 or [0, 1] float images -> float32 [0, 1] at `size` (height, width).

    uint8 is divided by 255 (not multiplied by 1/255, as convert_image_dtype
    does): pixels / 255 in numpy gives the same floats bit for bit, and deep
    randomly initialized networks amplify a last-bit difference to O(1).
    """
    if images.dtype == tf.uint8:
        images = tf.cast(images, tf.float32) / 255.0
    resized = tf.image.resize(images, size, method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def decode(image_bytes):
    """One encoded image -> uint8 [height, width, 3] (first frame of a GIF)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def bytes_function(outputs, size):
    """serving_image_bytes: `outputs` of the decoded images resized to `size`."""
    height, width = size
    resized_spec = tf.TensorSpec([height, width, 3], tf.float32)

    def from_bytes(image_bytes):
        images = tf.map_fn(
            lambda one: resize(decode(one), size),
            image_bytes,
            fn_output_signature=resized_spec,
        )
        return outputs(images)

    return tf.function(
        from_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        autograph=False,
    )


def uint8_function(outputs, size):
    """serving_uint8: `outputs` of the uint8 images resized to `size`."""

    def from_uint8(images):
        return outputs(resize(images, size))

    return tf.function(
        from_uint8,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        autograph=False,
    )
