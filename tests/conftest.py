"""Shared fixtures: small exports built once per test session.

Everything here uses weights=None or weights files the tests save themselves
(no network), small input sizes and small architectures, so that the default
run stays within a few minutes on 2 cores.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

import pytest  # noqa: E402

FV_SIZE = 64
NO_TENSORFLOW = "notf"  # The marker of the tests that need no TensorFlow.


def _only_no_tensorflow(config):
    return config.getoption("markexpr", "") == NO_TENSORFLOW


def pytest_ignore_collect(collection_path, config):
    """`pytest -m notf` (the fast loop) collects only the modules holding such
    tests: the others may import TensorFlow when they are collected."""
    if _only_no_tensorflow(config) and collection_path.suffix == ".py" \
            and collection_path.name.startswith("test_"):
        return f"mark.{NO_TENSORFLOW}" not in collection_path.read_text()
    return None


@pytest.fixture(autouse=True)
def _tensorflow_stays_unimported(request):
    """A test marked notf that imports TensorFlow fails (seen whenever TensorFlow
    was not imported before it, as in `pytest -m notf`, which CI runs). One
    case of a notf test that does import it is marked `tensorflow` too, and
    `-m notf` deselects it (conftest.pytest_collection_modifyitems)."""
    before = "tensorflow" in sys.modules
    yield
    if (request.node.get_closest_marker(NO_TENSORFLOW)
            and not request.node.get_closest_marker("tensorflow") and not before
            and "tensorflow" in sys.modules):
        pytest.fail(f"marked {NO_TENSORFLOW}, but it imported TensorFlow", pytrace=False)


def pytest_collection_modifyitems(config, items):
    if _only_no_tensorflow(config):
        kept = [item for item in items if not item.get_closest_marker("tensorflow")]
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_sessionfinish(session, exitstatus):
    """`pytest -m notf` fails if anything, collection included, imported TensorFlow."""
    if _only_no_tensorflow(session.config) and "tensorflow" in sys.modules \
            and exitstatus == 0:
        session.exitstatus = 1
        print(f"\n-m {NO_TENSORFLOW}: TensorFlow was imported", file=sys.stderr)


def first_of_each_module():
    """The first (smallest) architecture of each Keras module in the table,
    RegNetX and RegNetY apart (Y adds squeeze-and-excitation blocks): the
    members of a module are one constructor at other depths and widths."""
    from hubexport import architectures

    firsts = {}
    for a in architectures.ARCHITECTURES.values():
        firsts.setdefault(a.name[:len("RegNetX")] if a.module == "regnet" else a.module, a.name)
    return frozenset(firsts.values())


def shard(items):
    """The share of `items` of this process: HUBEXPORT_SHARD=I/N runs shard I
    of N, as `hubexport export_all --shard` splits a catalog."""
    from hubexport.batch import shards

    return shards.select_shard(items, os.environ.get("HUBEXPORT_SHARD"), lambda item: 1)


@pytest.fixture(scope="session")
def keras():
    import keras

    return keras


def save_random_weights(keras, directory, architecture, **kwargs):
    """Builds `architecture` with a fixed seed and saves its weights."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    model = getattr(keras.applications, architecture)(weights=None, **kwargs)
    path = os.path.join(directory, f"{architecture}-{len(os.listdir(directory))}.weights.h5")
    model.save_weights(path)
    return path


@pytest.fixture(scope="session")
def mobilenet_weights(keras, tmp_path_factory):
    """MobileNetV2 weights saved from the full model (with its classifier)."""
    directory = str(tmp_path_factory.mktemp("weights"))
    return save_random_weights(
        keras, directory, "MobileNetV2", input_shape=(FV_SIZE, FV_SIZE, 3),
        classifier_activation=None)


@pytest.fixture(scope="session")
def mobilenet_fv(mobilenet_weights, tmp_path_factory):
    """A MobileNetV2 feature-vector export (free height and width)."""
    from hubexport import export

    plan = export.plan("MobileNetV2", "feature_vector", FV_SIZE, mobilenet_weights)
    path = str(tmp_path_factory.mktemp("exports") / "mobilenet_v2_fv")
    # Without keep_loaded an export keeps nothing loaded (with it: test_checker).
    assert export.export(plan, path).loaded is None
    return path


def save_doubler(path):
    """A plain tf.Module SavedModel at `path` (x -> x * a tf.Variable of 2.0), as
    tf.saved_model.save writes it (fingerprint.pb included); returns `path`."""
    import tensorflow as tf

    class Doubler(tf.Module):
        def __init__(self):
            self.factor = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.factor

    tf.saved_model.save(Doubler(), path)
    return path


def reference_model(keras, architecture, weights_path, task, size):
    """The Keras application a user would build by hand, with `weights_path`."""
    keras.backend.clear_session()
    ctor = getattr(keras.applications, architecture)
    if task == "feature_vector":
        model = ctor(weights=None, include_top=False, pooling="avg",
                     input_shape=(None, None, 3) if size is None else (size, size, 3))
    else:
        model = ctor(weights=None, classifier_activation=None, input_shape=(size, size, 3))
    model.load_weights(weights_path)
    return model


def fit_through_hub(path, trainable, size=FV_SIZE):
    """One epoch of a Dense(3) head on hub.KerasLayer(path) in tf_keras.

    Returns (layer, model, images, trainable weights before, non-trainable
    weights before), for the test to compare with the weights after.
    """
    import numpy as np
    import tensorflow_hub as hub
    import tf_keras

    images = np.random.default_rng(0).uniform(0, 1, (8, size, size, 3)).astype("float32")
    layer = hub.KerasLayer(path, trainable=trainable)
    model = tf_keras.Sequential([tf_keras.Input((size, size, 3)), layer, tf_keras.layers.Dense(3)])
    model.compile(tf_keras.optimizers.SGD(0.1),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainable_before = [w.numpy() for w in layer.trainable_weights]
    frozen_before = [w.numpy() for w in layer.non_trainable_weights]
    model.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    return layer, model, images, trainable_before, frozen_before
