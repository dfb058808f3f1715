"""Runs a block with TensorFlow's graph optimizer (Grappler) switched off.

The exporter's verification and the checker run each function of a model a
few times on tiny batches, and TensorFlow optimizes every function the first
time it runs it: `benchmarks/check_time.py` measured the check at 0.76x and
the export at 0.83x of their time with Grappler (ConvNeXtBase at 32x32,
medians of three; BUILD_NOTES.md has the table). Grappler rewrites how
a graph runs, not what it computes, and the SavedModel stores the graphs
unoptimized, so consumers still get it.
"""

import contextlib


@contextlib.contextmanager
def disabled():
    """Switches Grappler off for functions first run inside the block."""
    import tensorflow as tf

    previous = tf.config.optimizer.get_experimental_options().get(
        "disable_meta_optimizer", False
    )
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": previous}
        )
