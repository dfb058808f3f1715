"""How close two computations must be, and how many images a verification or check calls with.

Each tolerance is named for what it compares; each batch budget for who calls.
"""

# All relative: max |a - b| / max |b|, b the reference (relative_difference).
VERIFICATION_TOLERANCE = 1e-4  # Every endpoint of the reloaded export vs. the Keras model.
REPEAT_CALL_TOLERANCE = 1e-6  # Two identical calls of __call__ (C3, and "changes nothing").
ALONE_VS_BATCH_TOLERANCE = 1e-5  # One example called alone vs. inside a batch (C3).
SERVE_VS_CALL_TOLERANCE = 1e-5  # obj.serve vs. obj(images, training=False) (K2).
SERVING_VS_CALL_TOLERANCE = 1e-4  # serving_default vs. obj(images, training=False) (K3).
# Absolute: |sum of a row - 1| below which outputs look like softmax probabilities (C4).
PROBABILITY_SUM_TOLERANCE = 1e-3
# top_k's confidences vs. the softmax or sigmoid of __call__'s logits (np.isclose).
TOP_K_RTOL, TOP_K_ATOL = 1e-4, 1e-6
# Moving-mean move ratio vs. the ratio of (1 - momentum) it should be (C5).
MOMENTUM_RATIO_TOLERANCE = 0.05

VERIFY_BATCH = 2  # Images per call of the export's verification.
CHECK_BATCH = 3  # Images per call of a check.
SECOND_SIZE_BATCH = 2  # Images per call of a check at a free-size model's second size.
GRADIENT_PIXELS = CHECK_BATCH * 224 * 224  # The most pixels one gradient step of a check takes.


def gradient_batch(height, width):
    """Images per gradient step of a check: CHECK_BATCH, fewer past 224x224 (1 at the least).

    A step keeps every activation for the backward pass: a batch of 3 at
    600x600 ran EfficientNetB7's gradient out of 24 GiB; a batch of 1 peaks
    at 14 GB. hubexport.catalog.estimate counts memory with it.
    """
    return min(CHECK_BATCH, max(1, GRADIENT_PIXELS // (height * width)))


def relative_difference(actual, expected):
    """max |actual - expected| / max |expected| (0 when both are all zero): the measure
    every relative tolerance above is stated in. Needs numpy (imported here)."""
    import numpy as np

    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale
