"""Writing an export: the SavedModel saved into a staging directory beside the
output, and the staging directory moved into place (atomic install).

A failure or an interrupt removes the staging directory and leaves an existing
output untouched (hubexport.atomic: staging_beside, replace_directory, and
clean_up_beside for what a killed export left).
"""

import contextlib
import tempfile

from hubexport import atomic
from hubexport import labels as labels_lib
from hubexport.export.destination import check_output


def _save(built, plan, directory):
    """Saves the reusable SavedModel; returns the reference trace (see verify)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    from hubexport import reusable

    height, width = built.input_hw
    # A tf.function traced outside a save context is traced again inside one
    # (the context's variable policy is part of the cache key), so the model
    # is traced where tf.saved_model.save will look for the traces. Custom
    # gradients (swish in EfficientNet, ...) must be saved, or the reloaded
    # model cannot be differentiated; `hubexport check` found that.
    options = tf.saved_model.SaveOptions()
    with tempfile.TemporaryDirectory() as scratch:
        extras = reusable.Extras(
            serving_size=built.size,
            labels=plan.labels,
            top_k=plan.top_k,
            activation=built.activation or "softmax",
            batch_norm_momentum=built.batch_norm_momentum,
            labels_path=labels_lib.write(plan.labels, scratch) if plan.labels else None,
        )
        with save_context.save_context(options):
            root, signatures, reference = reusable.make_root(
                built.model, plan.preprocessing, plan.task, height, width, extras,
                jit_compile=plan.jit_compile,
            )
        # A Keras application's only custom gradients are TensorFlow's own.
        with _tensors_compared_by_identity(plan.architecture is not None):
            tf.saved_model.save(root, directory, signatures=signatures, options=options)
    return reference


@contextlib.contextmanager
def _tensors_compared_by_identity(enabled):
    """Tensor == is `is` while the block runs (when enabled), as in TF1.

    tf.saved_model.save finds each custom gradient's captures (every swish of
    an EfficientNet) with list.index, and each comparison is a Tensor.__eq__
    that walks TensorFlow's context stack before it settles on identity:
    quadratic (EfficientNetB3's export at 32x32 0.84x with this switch,
    benchmarks/check_time.py --compare=identity_eq; BUILD_NOTES.md). The
    answers, and so the files, are the same either way. But the save also
    traces each custom gradient function from the eager context, where == is
    elementwise: only code known not to compare tensors may run under this
    (tf.nn.silu's gradient in Keras applications), so own models are saved
    with TensorFlow's default.
    """
    if not enabled:
        yield
        return
    import tensorflow as tf
    from tensorflow.python.framework import tensor as tensor_lib

    was_elementwise = tensor_lib.Tensor._USE_EQUALITY
    tf.compat.v1.disable_tensor_equality()
    try:
        yield
    finally:
        if was_elementwise:
            tf.compat.v1.enable_tensor_equality()


def _install(staging, output, overwrite=False, overwrite_any_saved_model=False, inputs=()):
    """Moves `staging` to `output`; an existing output survives any failure.

    The output is checked again first (check_output): it may have appeared or
    changed during the export. Then atomic.replace_directory: the old export
    is deleted only once the new one is in place.
    """
    check_output(output, overwrite, overwrite_any_saved_model, inputs)
    atomic.replace_directory(staging, output)
