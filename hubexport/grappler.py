"""Runs a block with TensorFlow's graph optimizer (Grappler) switched off.

The exporter's verification and the checker run each function of a model a
few times on tiny batches, and TensorFlow optimizes every function the first
time it runs it: for ConvNeXtBase at 32x32, `hubexport check` took 40-44 s
with Grappler and 28-36 s without (several runs each). Grappler rewrites how
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
