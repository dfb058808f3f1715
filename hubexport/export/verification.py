"""Verification: the reloaded SavedModel computes what the Keras model computes,
at every endpoint, within TOLERANCE.

Each endpoint is compared with what its row of contract.ENDPOINTS names
(compared_with: the Keras reference, __call__ on resized pixels, or the top k
of __call__; see contract.COMPARISONS).
"""

from hubexport import contract
from hubexport.contract import relative_difference

TOLERANCE = contract.VERIFICATION_TOLERANCE  # Relative to the largest reference magnitude.


class VerificationError(RuntimeError):
    """The reloaded SavedModel does not compute what the Keras model computes."""


def _load(directory):
    import tensorflow as tf

    return tf.saved_model.load(directory)


def verify(loaded, reference, plan, built, seed=0):
    """Compares every endpoint of the reloaded export with the Keras model.

    The reference is what a Keras user computes by hand:
    model(keras.applications.<module>.preprocess_input(255 * images)), with the
    model traced as a graph (`reference`, the trace the export calls):
    eager and graph execution fuse ops differently, and deep randomly
    initialized networks (EfficientNetV2L at 32x32) amplify that rounding to
    O(1) differences. An own model is also compared as it was saved (with the
    activation the export removed, applied again to the export's logits).
    The top_k and raw-image signatures are compared with __call__ on the same
    images. Returns the largest relative difference; raises VerificationError
    above TOLERANCE.
    """
    import numpy as np
    import tensorflow as tf

    height, width = built.size
    pixels = np.random.default_rng(seed).integers(
        0, 256, (contract.VERIFY_BATCH, height, width, 3), dtype=np.uint8)
    images = pixels.astype("float32") / 255.0
    source = plan.architecture or plan.keras_model
    reference_input = tf.constant(source.reference_preprocess_input()(255.0 * images))
    expected = reference(reference_input).numpy()
    _check_reference_shape(expected, plan, built)

    rows = contract.endpoints(labels=bool(plan.labels),
                              raw_images=_has_raw_images(loaded.signatures))
    key = contract.OUTPUT_KEYS[plan.task]
    call_output = loaded(images)
    comparisons = _reference_comparisons(loaded, rows, images, call_output, expected, key)
    if built.as_saved is not None:
        comparisons["__call__ vs. the model as saved"] = _as_saved_comparison(
            plan, built, reference_input, call_output)
    comparisons.update(_raw_image_comparisons(loaded, rows, pixels, images, call_output,
                                              built, key))
    worst = max([_difference(endpoint, actual, wanted, plan)
                 for endpoint, (actual, wanted) in comparisons.items()] + [0.0])
    for row in rows:
        if row.compared_with == contract.TOP_K_OF_CALL:
            _verify_top_k(loaded.signatures[row.name], images, np.asarray(call_output),
                          plan, built)
    return worst


def _check_reference_shape(expected, plan, built):
    """VerificationError unless the Keras model gives [batch, N] as the table says."""
    if expected.shape != (contract.VERIFY_BATCH, built.output_size):
        raise VerificationError(
            f"{plan.describe()} gives outputs of shape {expected.shape}; "
            f"expected {(contract.VERIFY_BATCH, built.output_size)}"
        )
    if plan.architecture and not plan.feature_layer:
        table = (contract.VERIFY_BATCH, plan.architecture.output_size(plan.task))
        if expected.shape != table:
            raise VerificationError(
                f"{plan.describe()} gives outputs of shape {expected.shape}, "
                f"the architecture table says {table}"
            )


def _has_raw_images(signatures):
    """Whether the export has the raw-image signatures (make_root was given Extras)."""
    return any(row.name in signatures for row in contract.ENDPOINTS
               if row.present == contract.WITH_RAW_IMAGES)


def _reference_comparisons(loaded, rows, images, call_output, expected, key):
    """{endpoint: (its output, the Keras reference)} for the rows compared with it."""
    import tensorflow as tf

    comparisons = {}
    for row in rows:
        if row.compared_with != contract.KERAS_REFERENCE:
            continue
        if row.name == contract.CALL:
            actual = call_output
        elif row.kind == contract.FUNCTION:
            actual = getattr(loaded, row.name)(images)
        else:
            actual = loaded.signatures[row.name](**{row.input_name: tf.constant(images)})[key]
        comparisons[row.name] = (actual, expected)
    return comparisons


def _as_saved_comparison(plan, built, reference_input, call_output):
    """(__call__'s output with the activation the export removed applied again, and
    the own model's output as saved)."""
    from hubexport import serving

    as_saved = built.as_saved(reference_input).numpy()
    activated = call_output
    if built.removed_activation:
        activated = serving.ACTIVATIONS[built.removed_activation](call_output)
    return activated, as_saved


def _raw_image_comparisons(loaded, rows, pixels, images, call_output, built, key):
    """{signature: (its output, __call__ on the pixels resized)} for the raw-image rows.

    They answer as __call__ does on the same photo converted and resized (at
    the export's size, exactly the images).
    """
    import numpy as np
    import tensorflow as tf

    from hubexport import serving

    resized_rows = [row for row in rows if row.compared_with == contract.CALL_ON_RESIZED]
    if not resized_rows:
        return {}
    resized = np.asarray(serving.resize(tf.constant(pixels), built.size))
    # At the export's own size the resize is the identity, bit for bit:
    # __call__ already answered on these images (one forward pass less).
    as_photo = (np.asarray(call_output) if np.array_equal(resized, images)
                else np.asarray(loaded(resized)))
    photos = {contract.UINT8_SIGNATURE: tf.constant(pixels),  # uint8, as the photo is.
              contract.BYTES_SIGNATURE: tf.stack([tf.io.encode_png(p) for p in pixels])}
    return {row.name: (loaded.signatures[row.name](**{row.input_name: photos[row.name]})[key],
                       as_photo)
            for row in resized_rows}


def _difference(endpoint, actual, wanted, plan):
    """relative_difference(actual, wanted); VerificationError above TOLERANCE."""
    import numpy as np

    actual = np.asarray(actual)
    if actual.shape != wanted.shape or actual.dtype != np.float32:
        raise VerificationError(
            f"{endpoint} of the SavedModel gives {actual.dtype} "
            f"{actual.shape}; expected float32 {wanted.shape}"
        )
    difference = relative_difference(actual, wanted)
    if not difference <= TOLERANCE:
        xla = (" (XLA reorders float math, and deep randomly initialized networks "
               "amplify that: EfficientNetV2L and ResNetRS200 at 32x32 differ by "
               "O(0.1-1); export without --jit_compile)" if plan.jit_compile else "")
        raise VerificationError(
            f"{endpoint} of the SavedModel differs from the Keras model by "
            f"{difference:.2e} (relative), more than {TOLERANCE:.0e}{xla}"
        )
    return difference


def _verify_top_k(top_k, images, logits, plan, built):
    """The top_k signature gives the labels and confidences of the k largest logits."""
    from hubexport import serving

    result = top_k(images=images)
    confidences = result[contract.TOP_K_CONFIDENCES].numpy()
    names = result[contract.TOP_K_LABELS].numpy()
    if confidences.shape != (len(logits), plan.top_k) or names.shape != confidences.shape:
        raise VerificationError(
            f"top_k returns labels {names.shape} and confidences {confidences.shape}; "
            f"expected {(len(logits), plan.top_k)}")
    mismatch = serving.top_k_mismatch(logits, plan.labels, built.activation, confidences, names)
    if mismatch == "confidences":
        raise VerificationError(
            f"top_k confidences differ from the {built.activation} of the logits")
    if mismatch == "labels":
        raise VerificationError("top_k labels do not name the classes of the largest logits")
