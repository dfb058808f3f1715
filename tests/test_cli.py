"""The command line: flags, configs, one-line errors and exit codes."""

import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from hubexport import cli
from hubexport import config as config_lib
from hubexport.errors import UserError


def run(*args):
    """Runs `hubexport ARGS` in this process; returns its exit code."""
    with flagsaver.flagsaver():
        argv = flags.FLAGS(["hubexport", *args])
        return cli.main(argv)


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubexport: error: ")
    assert "\n" not in err and "Traceback" not in err
    return err


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_export_with_flags_prints_where_the_model_is(tmp_path, capsys):
    output = tmp_path / "out" / "model"
    code = run("export", "--architecture=MobileNetV2", "--task=classification",
               "--image_size=32", "--weights=none", f"--output={output}")
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(output)
    assert any("Reloading and comparing" in line for line in lines)
    assert (output / "saved_model.pb").exists()


def test_flags_override_the_config(tmp_path, capsys):
    config = _write(tmp_path / "m.toml",
                    'architecture = "MobileNetV2"\ntask = "feature_vector"\n'
                    'image_size = 224\nweights = "imagenet"\n')
    output = tmp_path / "model"
    code = run("export", f"--config={config}", "--image_size=32", "--weights=none",
               f"--output={output}")
    assert code == 0, capsys.readouterr().err
    from hubexport import export

    info = export.read_provenance(str(output))
    assert (info["image_size"], info["weights"]["source"]) == (32, "none")


@pytest.mark.parametrize("args,message", [
    (["export", "--architecture=MobileNetV4", "--task=feature_vector", "--output=x"],
     "did you mean MobileNetV2"),
    (["export", "--architecture=VGG16", "--task=features", "--output=x"],
     "Unknown task 'features'; allowed: feature_vector, classification"),
    (["export", "--architecture=VGG16", "--task=feature_vector", "--image_size=16",
      "--weights=none", "--output=x"],
     "--image_size=16 is below the minimum of VGG16; allowed: 32 or more"),
    (["export", "--architecture=VGG16", "--task=classification", "--image_size=128",
      "--weights=imagenet", "--output=x"],
     "allowed with --weights=imagenet: 224"),
    (["export", "--architecture=VGG16", "--task=feature_vector", "--weights=/nope.weights.h5",
      "--output=x"],
     "no such file"),
    (["export", "--architecture=VGG16", "--task=feature_vector", "--weights=model.keras",
      "--output=x"],
     "allowed: imagenet, none, or a path ending in .weights.h5"),
    (["export", "--architecture=VGG16", "--task=feature_vector"], "export needs --output=DIR"),
    (["export", "--task=feature_vector", "--output=x"], "export needs --architecture"),
    (["export", "--architecture=VGG16", "--task=feature_vector", "--output=x",
      "--config_dir=c"], "--config_dir is not a flag of export"),
    (["export_all", "--config_dir=c"], "export_all needs --config_dir=DIR and --output_dir=DIR"),
    (["frobnicate"], "unknown command 'frobnicate'; allowed: export, export_all, check"),
    (["export", "extra"], "export takes no positional arguments"),
    (["check", "x", "--skip_checks=tfsm_layer,nope"],
     "--skip_checks names 'nope', which is not a check; allowed: saved_model_files,"),
    (["export_all", "--config_dir=c", "--output_dir=o", "--task=segmentation"],
     "Unknown task 'segmentation'; allowed: feature_vector, classification"),
    (["export_all", "--config_dir=c", "--output_dir=o", "--nocheck_exports",
      "--skip_checks=tfsm_layer"],
     "--skip_checks has no effect with --nocheck_exports (no check runs); drop one of them"),
])
def test_user_errors_are_one_line_with_exit_2(args, message, capsys):
    assert run(*args) == 2
    assert message in _one_line_error(capsys)


def test_existing_output_without_overwrite(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    code = run("export", "--architecture=MobileNetV2", "--task=feature_vector",
               "--weights=none", f"--output={tmp_path / 'model'}")
    assert code == 2
    assert "already exists; pass --overwrite" in _one_line_error(capsys)
    assert os.listdir(tmp_path / "model") == []


def test_config_errors(tmp_path):
    unknown = _write(tmp_path / "a.toml", 'architecture = "VGG16"\ntask = "feature_vector"\n'
                                          'image_sise = 224\n')
    with pytest.raises(UserError, match="unknown key 'image_sise'; allowed: architecture, keras_model, task"):
        config_lib.load(unknown)
    wrong_type = _write(tmp_path / "b.toml", 'architecture = "VGG16"\ntask = "feature_vector"\n'
                                             'image_size = "224"\n')
    with pytest.raises(UserError, match="image_size must be a int; received '224'"):
        config_lib.load(wrong_type)
    broken = _write(tmp_path / "c.toml", "architecture = \n")
    with pytest.raises(UserError, match="is not valid TOML"):
        config_lib.load(broken)
    missing = _write(tmp_path / "d.toml", 'architecture = "VGG16"\n')
    with pytest.raises(UserError, match="missing task"):
        config_lib.load(missing)


def test_export_all_validates_every_config_before_exporting(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    _write(configs / "a.toml", 'architecture = "MobileNetV2"\ntask = "feature_vector"\n')
    _write(configs / "b.toml", 'architecture = "MobileNetV9"\ntask = "feature_vector"\n')
    code = run("export_all", f"--config_dir={configs}", f"--output_dir={tmp_path / 'out'}",
               "--weights=none")
    assert code == 2
    assert "b.toml: Unknown architecture 'MobileNetV9'" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_catalog_has_both_tasks_of_every_architecture_at_default_size():
    from hubexport.architectures import ARCHITECTURES

    root = os.path.join(os.path.dirname(__file__), "..", "export_configs")
    seen = set()
    for name, path in config_lib.catalog(root):
        data = config_lib.load(path)
        arch = ARCHITECTURES[data["architecture"]]
        assert name == f"{arch.name.lower()}_{data['task']}"
        assert data["image_size"] == arch.default_size
        assert data["weights"] == "imagenet"
        seen.add((arch.name, data["task"]))
    assert seen == {(a, t) for a in ARCHITECTURES for t in ("feature_vector", "classification")}


def test_console_script_gives_one_line_and_no_traceback(tmp_path):
    """The installed entry point, in its own process, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-c", "from hubexport.cli import run; run()", "export",
         "--architecture=ResNet50", "--task=feature_vector", "--image_size=8",
         "--weights=none", f"--output={tmp_path / 'm'}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hubexport: error: --image_size=8 is below the minimum of ResNet50; "
        "allowed: 32 or more (default 224)")
    assert result.stdout == ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands_and_exits_zero(flag):
    result = subprocess.run(
        [sys.executable, "-c", "from hubexport.cli import run; run()", flag],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hubexport export --architecture=" in result.stdout
    assert "--config_dir" in result.stdout


def _documented_commands():
    root = os.path.join(os.path.dirname(__file__), "..")
    for name in ("README.md", "examples/github-actions-hubexport-check.yml"):
        with open(os.path.join(root, name)) as f:
            text = f.read().replace("\\\n", " ")
        for line in text.splitlines():
            start = line.find("hubexport ")
            words = line[start:].split()
            if start >= 0 and len(words) > 1 and words[1] in cli.COMMANDS:
                yield name, words


def test_documented_commands_use_real_commands_and_flags():
    commands = list(_documented_commands())
    assert {words[1] for _, words in commands} == set(cli.COMMANDS)
    for name, words in commands:
        options = [w.split("=")[0].lstrip("-") for w in words if w.startswith("--")]
        for option in options:
            assert option in flags.FLAGS, f"{name}: {' '.join(words)}: no flag --{option}"
            assert option in cli._ONLY_FOR[words[1]], f"{name}: --{option} not for {words[1]}"


def test_config_paths_are_relative_to_the_config(tmp_path):
    config = _write(tmp_path / "tagger.toml",
                    'keras_model = "models/tagger.h5"\ntask = "classification"\n'
                    'preprocessing = "caffe"\nlabels = "tags.txt"\nmulti_label = true\n'
                    'top_k = 3\n')
    settings = config_lib.load(config)
    assert settings["keras_model"] == str(tmp_path / "models" / "tagger.h5")
    assert settings["labels"] == str(tmp_path / "tags.txt")
    assert (settings["multi_label"], settings["top_k"]) == (True, 3)
    with pytest.raises(UserError, match="multi_label must be a bool"):
        config_lib.load(_write(tmp_path / "b.toml", 'architecture = "VGG16"\n'
                               'task = "classification"\nmulti_label = 1\n'))
    with pytest.raises(UserError, match="exactly one"):
        config_lib.load(_write(tmp_path / "c.toml", 'task = "classification"\n'))
