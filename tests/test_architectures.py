"""The architecture table tells the truth: every row is rebuilt and measured
(the first row of each Keras module in the default tier, the others in the
catalog tier: see MEASURED_BY_DEFAULT)."""

import itertools
import urllib.error
import warnings

import numpy as np
import pytest

from conftest import first_of_each_module, shard
from hubexport import architectures
from hubexport.architectures import ARCHITECTURES
from hubexport.errors import UserError

ROWS = sorted(ARCHITECTURES)

# Measuring every row takes 5-6 minutes on 2 cores: the default tier measures
# the smallest of each Keras module (one constructor at other depths and
# widths), the catalog tier the others (the free-size ones through the export
# of their feature vector: tests/test_catalog.py).
MEASURED_BY_DEFAULT = first_of_each_module()


def _rows(slow, unless=lambda arch: False):
    """ROWS but those where unless(architecture), those where slow(architecture)
    in the catalog tier (sharded)."""
    rows = [n for n in ROWS if not unless(ARCHITECTURES[n])]
    fast = [n for n in rows if not slow(ARCHITECTURES[n])]
    catalog = shard([n for n in rows if slow(ARCHITECTURES[n])])
    return fast + [pytest.param(n, marks=pytest.mark.catalog) for n in catalog]


def _measured_in_the_catalog_tier(arch):
    return arch.name not in MEASURED_BY_DEFAULT


def test_table_covers_every_application_of_keras_and_tf_keras(keras):
    import tf_keras

    def applications(library):
        return {name for name in dir(library.applications) if name[0].isupper()}

    keras_names = applications(keras)
    tf_keras_only = applications(tf_keras) - keras_names
    assert set(ARCHITECTURES) == keras_names | tf_keras_only
    assert {n for n, a in ARCHITECTURES.items() if a.library == "tf_keras"} == tf_keras_only
    assert (len(keras_names), len(tf_keras_only), len(ARCHITECTURES)) == (40, 31, 71)


@pytest.mark.parametrize("name", ROWS)
def test_preprocessing_mode_matches_keras_preprocess_input(name):
    import tensorflow as tf

    from hubexport import preprocessing

    arch = ARCHITECTURES[name]
    images = np.random.default_rng(0).uniform(0, 1, (2, 5, 7, 3)).astype("float32")
    expected = np.asarray(arch.reference_preprocess_input()(255.0 * images))
    actual = preprocessing.preprocess(tf.constant(images), arch.preprocessing).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ROWS)
def test_row_min_size_is_the_smallest_keras_takes(name):
    """Keras refuses min_size - 1 (before building anything; min_size itself is
    built below, or by the catalog tier's export of the row)."""
    arch = ARCHITECTURES[name]
    below = arch.min_size - 1
    with pytest.raises(ValueError, match=f"at least {arch.min_size}x{arch.min_size}"):
        arch.constructor()(weights=None, include_top=False, input_shape=(below, below, 3))


def _measured_by_its_export(arch):
    """Rows whose free_size and num_features the catalog tier's export of the
    row's feature vector measures (tests/test_catalog.py): exported at min_size
    with free height and width, verified to give [batch, num_features], and
    checked at a second, non-square size (free_size, feature_size_constant). A fixed row's
    export cannot show that Keras refuses free sizes, so it is built here."""
    return arch.name not in MEASURED_BY_DEFAULT and arch.free_size


@pytest.mark.parametrize("name", _rows(_measured_in_the_catalog_tier, unless=_measured_by_its_export))
def test_row_sizes_and_features(name):
    """min_size, free_size and num_features, measured on the built model."""
    import tensorflow as tf

    arch = ARCHITECTURES[name]
    keras = arch.keras_module()
    ctor = arch.constructor()
    keras.backend.clear_session()
    model = ctor(weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3))
    sizes = [(arch.min_size, arch.min_size), (arch.min_size + 13, arch.min_size + 6)]
    if arch.free_size:
        for height, width in sizes:
            features = model(tf.zeros([1, height, width, 3]), training=False)
            assert features.shape == (1, arch.num_features)
    else:
        with pytest.raises(Exception, match="Incompatible shapes"):
            model(tf.zeros([1, arch.min_size, arch.min_size, 3]), training=False)
        keras.backend.clear_session()
        size = arch.min_size + 1
        model = ctor(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
        assert model(tf.zeros([1, size, size, 3]), training=False).shape == (1, arch.num_features)
    keras.backend.clear_session()


# RegNet refuses the size before building; ResNetRS builds the model first.
@pytest.mark.parametrize("name", _rows(lambda a: _measured_in_the_catalog_tier(a) and not a.imagenet_head_fixed))
def test_default_size_and_imagenet_head_rule(name, monkeypatch):
    """Keras refuses the ImageNet classifier at other sizes exactly where we do."""
    arch = ARCHITECTURES[name]
    keras = arch.keras_module()
    if arch.library == "tf_keras":
        from tf_keras.src.utils import data_utils as file_utils
    else:
        from keras.src.utils import file_utils
    asked = []

    def offline(url, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    other = arch.default_size + 1
    keras.backend.clear_session()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception) as error:
            arch.constructor()(weights="imagenet", include_top=True, input_shape=(other, other, 3))
    d = arch.default_size
    if arch.imagenet_head_fixed:
        assert isinstance(error.value, ValueError)
        assert f"({d}, {d}, 3)" in str(error.value)
        assert arch.size_problem("classification", other, imagenet=True)
    else:  # Keras got past its checks and asked for the weights of d x d:
        assert "URL fetch failure" in str(error.value)
        assert (any(f"({d}, {d})" in str(w.message) for w in caught)  # MobileNetV3
                or asked[-1].endswith(f"-i{d}.h5"))  # ResNetRS: resnet-rs-50-i160.h5
        assert arch.size_problem("classification", other, imagenet=True) is None
    assert arch.size_problem("classification", arch.default_size, imagenet=True) is None
    assert arch.size_problem("classification", arch.min_size, imagenet=False) is None
    assert arch.size_problem("feature_vector", arch.min_size - 1, imagenet=False)


@pytest.mark.notf
@pytest.mark.parametrize("name", ROWS)
def test_tfhub_tag_is_an_id_of_the_rows_family(name):
    """tfhub is an id of tfhub.dev's tags/network_architecture.yaml (lowercase words
    and digits joined by -) that starts with the family's name, or None."""
    import re

    tag = ARCHITECTURES[name].tfhub
    if tag is not None:
        assert re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", tag), tag
        assert name.lower().startswith(tag.split("-")[0]), (name, tag)


@pytest.mark.notf
def test_tfhub_tags_are_the_model_cards():
    """The network-architecture line of the card is the row's tfhub, or left out."""
    from hubexport.publish import model_card

    for name in ("MobileNetV3Small", "ResNet152V2", "ConvNeXtTiny"):
        card = model_card.render({"architecture": name, "task": "feature_vector"})
        tag = ARCHITECTURES[name].tfhub
        assert (f"<!-- network-architecture: {tag} -->" in card) == (tag is not None)
        assert ("network-architecture" in card) == (tag is not None)


@pytest.mark.notf
def test_unknown_architecture_lists_closest_names():
    with pytest.raises(UserError, match=r"Unknown architecture 'MobileNetV4'; did you mean "
                                        r"MobileNetV2, .*allowed: ConvNeXtBase"):
        architectures.lookup("MobileNetV4")
    assert architectures.lookup("mobilenetv2").name == "MobileNetV2"


@pytest.mark.notf
def test_unknown_task_lists_tasks():
    with pytest.raises(UserError, match="allowed: feature_vector, classification"):
        architectures.check_task("segmentation")


@pytest.mark.notf
def test_input_size_is_free_only_where_measured():
    assert ARCHITECTURES["MobileNetV2"].input_hw("feature_vector", 224) == (None, None)
    assert ARCHITECTURES["NASNetMobile"].input_hw("feature_vector", 224) == (224, 224)
    assert ARCHITECTURES["MobileNetV2"].input_hw("classification", 96) == (96, 96)


@pytest.mark.notf
def test_readme_tables_are_the_table():
    """README.md's two tables (Keras 3's applications, then tf_keras') have exactly
    the table's rows, in its order: none missing, none stale, none in the wrong table."""
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        lines = f.read().splitlines()
    tables = []
    for i, line in enumerate(lines):
        if line.startswith("| architecture |"):
            rows = [row for row in itertools.takewhile(lambda r: r.startswith("| "),
                                                       lines[i + 2:])]
            tables.append(rows)

    def row(a):
        return (f"| {a.name} | {a.preprocessing} | {a.default_size} | {a.min_size} | "
                f"{'free' if a.free_size else 'fixed'} | {a.num_features} | "
                f"{'at default size' if a.imagenet_head_fixed else 'any size'} |")

    assert tables == [[row(a) for a in ARCHITECTURES.values() if a.library == library]
                      for library in ("keras", "tf_keras")]
