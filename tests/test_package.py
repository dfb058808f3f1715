"""hubexport.publish.package (the tfhub.dev archive) and hubexport.publish.model_card.

Most tests build fake SavedModel trees of small files; one saves a real tiny
SavedModel and loads it back from the archive.
"""

import io
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
from conftest import save_doubler

from hubexport import contract
from hubexport.publish import model_card, package
from hubexport.errors import UserError

FILES = {
    "saved_model.pb": b"graph",
    "fingerprint.pb": b"fingerprint",
    "keras_metadata.pb": b"keras",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"weights" * 100,
    "assets/labels.txt": b"cat\ndog\n",
    "assets.extra/hubexport.json": b"{}",
}


def make_tree(root, files=FILES):
    """A SavedModel-shaped directory of small files; returns its path."""
    for relative, data in files.items():
        path = os.path.join(root, *relative.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(root)


def members(archive):
    with tarfile.open(archive) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None)
                for m in tar.getmembers()}


# --- package ---------------------------------------------------------------


@pytest.mark.notf
def test_archive_holds_allowed_files_at_root_with_fixed_owners_and_modes(tmp_path):
    model = make_tree(tmp_path / "model")
    os.chmod(os.path.join(model, "saved_model.pb"), 0o600)
    os.chmod(os.path.join(model, "assets", "labels.txt"), 0o755)

    output = package.package(model)

    assert output == model + ".tar.gz"
    entries = members(output)
    assert list(entries) == [  # Sorted, each directory before its contents.
        "assets", "assets/labels.txt", "assets.extra",
        "assets.extra/hubexport.json", "keras_metadata.pb", "saved_model.pb",
        "variables", "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    for name, (member, data) in entries.items():
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (
            0, 0, "", "", 0), name
        if member.isdir():
            assert member.mode == 0o755, name
        else:
            assert member.isfile() and member.mode == 0o644, name
            assert data == FILES[name]
    assert "fingerprint.pb" not in entries


@pytest.mark.notf
def test_same_model_gives_byte_identical_archives(tmp_path):
    first = make_tree(tmp_path / "a")
    second = make_tree(tmp_path / "elsewhere" / "b")  # Other path, times, order.
    os.utime(os.path.join(second, "saved_model.pb"), (1e9, 1e9))

    one = package.package(first)
    two = package.package(second)
    again = package.package(first, output=str(tmp_path / "again.tar.gz"))

    data = open(one, "rb").read()
    assert data == open(two, "rb").read() == open(again, "rb").read()
    assert data[4:8] == b"\0\0\0\0"  # The gzip header's time.


@pytest.mark.notf
def test_refuses_extra_files_and_lists_them(tmp_path):
    model = make_tree(tmp_path / "model", {
        **FILES, "notes.txt": b"x", "variables/extra.bin": b"x",
        "assets/.hidden": b"x", "tfhub_module.pb": b"x", "checkpoints/c": b"x"})

    with pytest.raises(UserError) as e:
        package.package(model)

    message = str(e.value)
    assert "\n" not in message
    for path in ("notes.txt", "variables/extra.bin", "assets/.hidden",
                 "tfhub_module.pb", "checkpoints/"):
        assert path in message
    assert "checkpoints/c" not in message
    assert "Allowed: saved_model.pb" in message and "assets.extra/" in message
    assert not os.path.exists(model + ".tar.gz")
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.notf
def test_refuses_symlinks_even_inside_assets(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    model = make_tree(tmp_path / "model")
    os.symlink(outside, os.path.join(model, "assets", "link.txt"))
    os.symlink(tmp_path, os.path.join(model, "assets.extra", "up"))

    with pytest.raises(UserError) as e:
        package.package(model)

    message = str(e.value)
    assert f"assets/link.txt -> {outside}" in message
    assert f"assets.extra/up -> {tmp_path}" in message
    assert "symlinks" in message and "\n" not in message
    assert not os.path.exists(model + ".tar.gz")


@pytest.mark.notf
@pytest.mark.parametrize("missing, named", [
    ("saved_model.pb", "no saved_model.pb"),
    ("variables", "no variables/"),
])
def test_refuses_a_directory_that_is_not_a_saved_model(tmp_path, missing, named):
    files = {k: v for k, v in FILES.items() if not k.startswith(missing)}
    model = make_tree(tmp_path / "model", files)

    with pytest.raises(UserError, match=f"is not a SavedModel: it has {named};"):
        package.package(model)
    assert not os.path.exists(model + ".tar.gz")


def _old_archive(model):
    """An archive `package` wrote before (of other files), as bytes on disk."""
    package.package(model)
    return open(model + ".tar.gz", "rb").read()


@pytest.mark.notf
def test_existing_output_is_refused_and_kept_unless_overwrite(tmp_path, monkeypatch):
    model = make_tree(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    old = _old_archive(make_tree(tmp_path / "other", {**FILES, "assets/x.txt": b"x"}))
    os.rename(tmp_path / "other.tar.gz", output)
    written = []
    write_archive = package.write_archive
    monkeypatch.setattr(package, "write_archive",
                        lambda *args: written.append(1) or write_archive(*args))

    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        package.package(model)
    assert output.read_bytes() == old
    assert not written  # Refused before any work.

    package.package(model, overwrite=True)
    assert written
    assert "saved_model.pb" in members(str(output)) and "assets/x.txt" not in members(str(output))


def _user_tar(path, files, **tar_kwargs):
    """A .tar.gz as `tar -czf` makes it: real mtimes, the user's name."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uname = len(data), 1700000000, "alice"
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.mark.notf
@pytest.mark.parametrize("make,named", [
    (lambda path: (path.write_bytes(b"my notes"), b"my notes")[1], "not a gzipped tar file"),
    (lambda path: _user_tar(path, {"src/code.py": b"print(1)"}),
     "a gzipped tar without saved_model.pb at its root, holding src/code.py"),
])
def test_overwrite_refuses_a_file_that_is_not_an_archive_of_a_saved_model(tmp_path, make, named):
    model = make_tree(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    before = make(output)
    for flags in ({"overwrite": True}, {"overwrite_any_saved_model": True}):
        with pytest.raises(UserError) as refused:
            package.package(model, **flags)
        assert named in str(refused.value) and "\n" not in str(refused.value)
        assert output.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model", "model.tar.gz"]


@pytest.mark.notf
def test_an_archive_package_did_not_write_needs_overwrite_any_saved_model(tmp_path):
    model = make_tree(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    before = _user_tar(output, {"saved_model.pb": b"graph", "notes.txt": b"mine"})
    with pytest.raises(UserError, match="did not write; pass --overwrite_any_saved_model"):
        package.package(model, overwrite=True)
    assert output.read_bytes() == before
    package.package(model, overwrite_any_saved_model=True)
    assert "notes.txt" not in members(str(output))


@pytest.mark.notf
def test_output_that_appears_during_the_write_is_checked_again(tmp_path, monkeypatch):
    model = make_tree(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    write_archive = package.write_archive

    def user_saves_a_file_meanwhile(*args):
        write_archive(*args)
        output.write_bytes(b"my notes")

    monkeypatch.setattr(package, "write_archive", user_saves_a_file_meanwhile)
    with pytest.raises(UserError, match="not a gzipped tar file"):
        package.package(model, overwrite=True)
    assert output.read_bytes() == b"my notes"
    assert sorted(os.listdir(tmp_path)) == ["model", "model.tar.gz"]


@pytest.mark.notf
@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_partial_archive(tmp_path, monkeypatch, interrupt):
    model = make_tree(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    old = _old_archive(model)
    calls = []
    addfile = tarfile.TarFile.addfile

    def failing_addfile(self, *args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 3:
            raise interrupt
        return addfile(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
    with pytest.raises(type(interrupt)):
        package.package(model, overwrite=True)

    assert len(calls) == 3  # It did fail mid-write.
    assert output.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["model", "model.tar.gz"]


@pytest.mark.notf
def test_refuses_outputs_tfhub_dev_would_not_take(tmp_path):
    model = make_tree(tmp_path / "model")
    with pytest.raises(UserError, match=r"must end with \.tar\.gz"):
        package.package(model, output=str(tmp_path / "model.zip"))
    with pytest.raises(UserError, match="is inside the SavedModel"):
        package.package(model, output=os.path.join(model, "assets.extra", "m.tar.gz"))
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_real_saved_model_loads_from_the_archive(tmp_path):
    import tensorflow as tf

    model = save_doubler(str(tmp_path / "model"))  # x -> 2x, a tf.Variable inside.
    assert os.path.exists(os.path.join(model, "fingerprint.pb"))  # TF writes it.

    archive = package.package(model)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "extracted", filter="data")

    assert "fingerprint.pb" not in names and "saved_model.pb" in names
    loaded = tf.saved_model.load(str(tmp_path / "extracted"))
    assert loaded(tf.constant([1.5])).numpy().tolist() == [3.0]


@pytest.mark.notf
def test_modules_do_not_import_tensorflow():
    code = ("import sys, hubexport.publish.package, hubexport.publish.model_card; "
            "print('tensorflow' in sys.modules)")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True, cwd=repository)
    assert result.stdout.strip() == "False"


# --- model card --------------------------------------------------------------

FEATURE_VECTOR = {
    "format": "hubexport-provenance/1",
    "architecture": "MobileNetV2",
    "task": "feature_vector",
    "image_size": 224,
    "input": {"dtype": "float32", "shape": [None, None, None, 3],
              "range": [0.0, 1.0], "channels": "RGB", "min_size": 32,
              "size_is_free": True},
    "preprocessing": "tf",
    "output": {"key": "feature_vector", "size": 1280,
               "meaning": "global average pool of the last feature map"},
    "weights": {"source": "imagenet", "path": None, "sha256": None},
    "verification": {"max_relative_difference": 3.2e-07, "tolerance": 1e-4},
    "versions": {"hubexport": "0.1.0", "tensorflow": "2.21.0", "keras": "3.15.1"},
    "source": {"kind": "architecture", "path": None, "sha256": None},
    "labels": None,
    "multi_label": False,
    "feature_layer": None,
    "pooling": "avg",
    "signatures": contract.signature_names(labels=False),  # As the exporter writes them.
    "batch_norm_momentum": 0.99,
}
CLASSIFIER = {
    **FEATURE_VECTOR,
    "architecture": "EfficientNetB0",
    "task": "classification",
    "input": {**FEATURE_VECTOR["input"], "shape": [None, 224, 224, 3],
              "size_is_free": False},
    "preprocessing": "raw255",
    "output": {"key": "logits", "size": 1000, "activation": "softmax",
               "meaning": "logits (before softmax) over the 1000 ImageNet classes"},
    "pooling": None,
    "batch_norm_momentum": None,
}
MULTI_LABEL = {
    **CLASSIFIER,
    "architecture": "ResNet50",
    "output": {"key": "logits", "size": 12,
               "meaning": "one logit per class of assets/labels.txt"},
    "weights": {"source": "file", "path": "/home/me/flowers.weights.h5",
                "sha256": "ab" * 32},
    "source": {"kind": "keras_model", "path": "/home/me/flowers.keras",
               "sha256": "cd" * 32},
    "labels": {"count": 12, "file": "assets/labels.txt"},
    "multi_label": True,
    "top_k": 3,
    "signatures": contract.signature_names(labels=True),
}
REQUIRED = {"asset-path", "task", "fine-tunable", "format"}
OPTIONAL = {"network-architecture", "dataset", "language", "license", "colab",
            "interactive-visualizer"}


def tfhub_metadata(card):
    """Checks the layout tfhub.dev's validator required; returns the metadata.

    First line "# Module publisher/name/version", a description, then only
    "<!-- key: value -->" lines (or empty ones) up to the first heading.
    """
    lines = card.split("\n")
    assert re.fullmatch(r"# Module [a-z\d-]+/[\w.-]+(/[\w.-]+)*/\d+", lines[0])
    index = 2 if not lines[1] else 1
    assert lines[index] and not lines[index].startswith("<!--")
    while lines[index] and not lines[index].startswith("<!--"):
        index += 1
    metadata = {}
    while not lines[index].startswith("#"):
        if lines[index]:
            match = re.fullmatch(r"<!--([\w\s-]+):(.+)-->", lines[index])
            assert match, f"not a metadata line: {lines[index]!r}"
            metadata.setdefault(match[1].strip(), []).append(match[2].strip())
        index += 1
    assert REQUIRED <= set(metadata) <= REQUIRED | OPTIONAL
    assert all(len(values) == 1 for values in metadata.values()), metadata
    assert metadata["asset-path"][0].endswith(".tar.gz")
    return {key: values[0] for key, values in metadata.items()}


@pytest.mark.notf
def test_feature_vector_card():
    card = model_card.render(FEATURE_VECTOR)

    assert card.startswith("# Module hubexport/mobilenetv2/feature_vector/1\n")
    assert tfhub_metadata(card) == {
        "asset-path": "https://example.com/hubexport/mobilenetv2/feature_vector/1.tar.gz",
        "task": "image-feature-vector",
        "network-architecture": "mobilenet-v2",
        "dataset": "imagenet-ilsvrc-2012-cls",
        "fine-tunable": "true",
        "format": "saved_model_2",
    }
    for text in ("`num_features` = 1280", "at least 32 x 32 pixels",
                 "values in [0, 1]", "global average pooling",
                 "signature `serving_default`", '{"feature_vector": ...}',
                 "hub.KerasLayer(PATH, trainable=True)",
                 'call_training_endpoint="serve_training"', "low learning rate",
                 "Batch norm", "arguments=dict(batch_norm_momentum=0.997)",
                 "defaults to 0.99", "at most 3.2e-07", "tolerance 1e-04",
                 "tensorflow 2.21.0"):
        assert text in card, text
    assert "softmax" not in card and "sigmoid" not in card
    assert "None" not in card


@pytest.mark.notf
def test_classification_card_is_for_softmax():
    card = model_card.render(CLASSIFIER)

    metadata = tfhub_metadata(card)
    assert metadata["task"] == "image-classification"
    assert metadata["network-architecture"] == "efficientnet-b0"
    assert "**logits**" in card and "`num_classes` = 1000" in card
    assert "meant for **softmax**" in card and "tf.nn.softmax(logits)" in card
    assert "sigmoid" not in card
    assert "fixed: `height` x `width` = 224 x 224" in card
    assert "batch_norm_momentum" not in card
    assert "None" not in card


@pytest.mark.notf
def test_multi_label_card_with_labels_is_for_sigmoid():
    card = model_card.render(MULTI_LABEL, handle="acme/flowers/2")

    assert card.startswith("# Module acme/flowers/2\n")
    metadata = tfhub_metadata(card)
    assert metadata["task"] == "image-classification"
    assert "network-architecture" not in metadata  # A user's model, not an application.
    assert "dataset" not in metadata  # Not ImageNet weights.
    assert "**multi-label**" in card and "tf.sigmoid(logits)" in card
    assert "softmax" not in card
    assert "`assets/labels.txt`" in card and "(12 lines)" in card
    assert "tf.math.top_k(logits, k=3)" in card
    assert "signature `top_k`" in card and "signature `serving_uint8`" in card
    assert "sha256 `" + "cd" * 32 in card and "sha256 `" + "ab" * 32 in card
    assert "Keras model file `flowers.keras`" in card and "/home/me" not in card
    assert "keras.applications" not in card
    assert "None" not in card


@pytest.mark.notf
def test_absent_keys_leave_their_lines_out():
    minimal = {"architecture": "ResNet50", "task": "classification"}
    nones = {key: None for key in ("source", "labels", "multi_label", "top_k",
                                   "feature_layer", "pooling", "signatures",
                                   "batch_norm_momentum", "weights", "versions",
                                   "verification", "input", "output")}
    for provenance in (minimal, {**minimal, **nones}):
        card = model_card.render(provenance)
        assert tfhub_metadata(card)["task"] == "image-classification"
        assert "None" not in card and "null" not in card
        assert "sha256" not in card and "tolerance" not in card
        assert "signature `serving_default`" in card


@pytest.mark.notf
def test_card_refuses_a_bad_handle_or_task():
    with pytest.raises(UserError, match="is not publisher/model/version"):
        model_card.render(FEATURE_VECTOR, handle="Acme/model")
    with pytest.raises(UserError, match="allowed: feature_vector, classification"):
        model_card.render({**FEATURE_VECTOR, "task": "detection"})


@pytest.mark.notf
def test_write_puts_the_card_in_assets_extra(tmp_path):
    path = model_card.write(str(tmp_path), FEATURE_VECTOR, handle="acme/mnv2/1")

    assert path == os.path.join(str(tmp_path), "assets.extra", "model_card.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == model_card.render(FEATURE_VECTOR, handle="acme/mnv2/1")


@pytest.mark.notf
def test_card_and_provenance_go_into_the_archive(tmp_path):
    model = make_tree(tmp_path / "model", {
        **FILES, "assets.extra/hubexport.json": json.dumps(FEATURE_VECTOR).encode()})
    model_card.write(model, FEATURE_VECTOR)

    entries = members(package.package(model))

    card = entries["assets.extra/model_card.md"][1].decode()
    assert card == model_card.render(FEATURE_VECTOR)
    assert json.load(io.BytesIO(entries["assets.extra/hubexport.json"][1])) == FEATURE_VECTOR
