"""The test run's warning filters (setup.cfg [tool:pytest] filterwarnings): the
third-party warnings that flooded its output are gone, and nothing else is."""

import configparser
import os
import warnings

import pytest

COPY_WARNING = "__array__ implementation doesn't accept a copy keyword, so passing copy=False failed"


def _filters():
    config = configparser.ConfigParser(interpolation=None)
    config.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    return [line for line in config["tool:pytest"]["filterwarnings"].splitlines() if line]


@pytest.mark.notf
def test_every_filter_names_a_message_a_category_and_a_module():
    for line in _filters():
        action, message, category, module = line.split(":")[:4]
        assert action == "ignore" and message and category.endswith("Warning") and module, line


def test_keras_numpy_copy_warning_is_filtered_only_where_keras_raises_it():
    import tensorflow as tf
    from keras.src.backend.tensorflow import core

    with warnings.catch_warnings(record=True) as caught:  # Keeps pytest's filters.
        core.convert_to_numpy(tf.Variable([1.0]))  # Keras' np.array(variable).
        warnings.warn_explicit(COPY_WARNING, DeprecationWarning, "elsewhere.py", 1,
                               module="hubexport.elsewhere")
    assert [(str(w.message), w.filename) for w in caught] == [(COPY_WARNING, "elsewhere.py")]
