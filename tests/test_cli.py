"""The command line: flags, configs, one-line errors and exit codes."""

import os
import subprocess
import sys
import tempfile

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


def _writable(directory):
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory))
        return True
    except OSError:
        return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write: a chmod 0555 one, or, for root
    (whom permissions do not stop), /sys, which root cannot write either."""
    directory = tmp_path / "read_only"
    directory.mkdir()
    directory.chmod(0o555)
    found = next((d for d in (str(directory), "/sys")
                  if os.path.isdir(d) and not _writable(d)), None)
    try:
        if found is None:
            pytest.skip("no directory this process cannot write")
        yield found
    finally:
        directory.chmod(0o755)


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


@pytest.mark.notf
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
    pytest.param(["check", "x", "--skip_checks=tfsm_layer,nope"],  # Imports the checks.
                 "--skip_checks names 'nope', which is not a check; allowed: saved_model_files,",
                 marks=pytest.mark.tensorflow),
    pytest.param(["export_all", "--config_dir=c", "--output_dir=o", "--task=segmentation"],
                 "Unknown task 'segmentation'; allowed: feature_vector, classification",
                 marks=pytest.mark.tensorflow),  # Imports the catalog's checks.
    pytest.param(["export_all", "--config_dir=c", "--output_dir=o", "--nocheck_exports",
                  "--skip_checks=tfsm_layer"],
                 "--skip_checks has no effect with --nocheck_exports (no check runs); drop one "
                 "of them", marks=pytest.mark.tensorflow),
])
def test_user_errors_are_one_line_with_exit_2(args, message, capsys):
    assert run(*args) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.notf
def test_existing_output_without_overwrite(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    code = run("export", "--architecture=MobileNetV2", "--task=feature_vector",
               "--weights=none", f"--output={tmp_path / 'model'}")
    assert code == 2
    assert "already exists; pass --overwrite" in _one_line_error(capsys)
    assert os.listdir(tmp_path / "model") == []


@pytest.mark.notf
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


@pytest.mark.notf
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


@pytest.mark.notf
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


@pytest.mark.notf
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands_and_exits_zero(flag):
    result = subprocess.run(
        [sys.executable, "-c", "from hubexport.cli import run; run()", flag],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hubexport export --architecture=" in result.stdout
    assert "--config_dir" in result.stdout
    assert "hubexport COMMAND --help lists the flags of one command" in result.stdout
    assert not _listed_flags(result.stdout)  # The overview; each command lists its own.


def _console(*args):
    """`hubexport ARGS` in its own process; (exit code, stdout, TensorFlow imported)."""
    code = ("import sys; from hubexport.cli import run\n"
            f"sys.argv = ['hubexport', *{list(args)!r}]\n"
            "try:\n    run()\n"
            "finally:\n    print('tensorflow' in sys.modules, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    return result.returncode, result.stdout, result.stderr.split()[-1] == "True"


def _listed_flags(text):
    import re

    return set(re.findall(r"^  --(?:\[no\])?(\w+):", text, re.MULTILINE))


@pytest.mark.notf
@pytest.mark.parametrize("command", cli.COMMANDS)
def test_command_help_lists_only_that_commands_flags(command):
    text = cli.help_text([command, "--help"])
    assert text.startswith(f"Usage:\n  hubexport {command} ")
    usage = [line for line in text.splitlines() if line.startswith("  hubexport ")]
    assert usage and all(line.startswith(f"  hubexport {command} ") for line in usage)
    assert _listed_flags(text) == cli._ONLY_FOR[command]


@pytest.mark.notf
def test_help_lists_the_check_names_and_the_architectures():
    import re

    from hubexport import names
    from hubexport.architectures import ARCHITECTURES

    check_help = cli.help_text(["check", "--help"])
    for name in cli.check_names():
        assert re.search(rf"[ ,]{name}[,.]", check_help), name
    compact = names.compact(ARCHITECTURES)
    assert compact in " ".join(cli.help_text(["export", "-h"]).split())
    expanded = []
    for item in compact.split(", "):
        stem, _, numbers = item.partition("{")
        expanded += [stem + n for n in numbers.rstrip("}").split(",")] if numbers else [stem]
    assert expanded == list(ARCHITECTURES)
    assert len(compact) < len(", ".join(ARCHITECTURES)) * 0.7


def test_check_names_read_from_the_source_are_the_checks():
    from hubexport import checker

    assert cli.check_names() == [c.name for c in checker.all_checks()]


@pytest.mark.notf
def test_command_help_is_a_separate_process_that_exits_0_without_tensorflow():
    code, out, tensorflow = _console("check", "-h")
    assert (code, tensorflow) == (0, False)
    assert out.startswith("Usage:\n  hubexport check PATH")
    assert _listed_flags(out) == cli._ONLY_FOR["check"]
    assert "hub_frozen, tfsm_layer, serve_endpoint" in " ".join(out.split())


@pytest.mark.notf
def test_version_prints_the_version_without_tensorflow():
    import hubexport

    assert _console("--version") == (0, f"hubexport {hubexport.__version__}\n", False)


def test_readme_commands_run_in_a_shell_after_the_set_up_block():
    """Pasted into a fresh shell after the set-up block, each README command finds
    its program: the block activates the venv, and the venv has every program."""
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        blocks = re.findall(r"```sh\n(.*?)```", f.read(), re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    set_up = lines.index("source .venv/bin/activate")
    assert set_up == 1 and lines[0].startswith("python3.11 -m venv .venv && ")
    programs = {line.split()[0] for line in lines[set_up + 1:]}
    assert {"hubexport", "saved_model_cli"} <= programs
    venv_bin = os.path.dirname(sys.executable)  # .venv/bin when run as README says.
    for program in programs:
        assert os.path.exists(os.path.join(venv_bin, program)), program


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


@pytest.mark.notf
def test_documented_commands_use_real_commands_and_flags():
    commands = list(_documented_commands())
    assert {words[1] for _, words in commands} == set(cli.COMMANDS)
    for name, words in commands:
        options = [w.split("=")[0].lstrip("-") for w in words if w.startswith("--")]
        for option in options:
            assert option in flags.FLAGS, f"{name}: {' '.join(words)}: no flag --{option}"
            assert option in cli._ONLY_FOR[words[1]], f"{name}: --{option} not for {words[1]}"


@pytest.mark.notf
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


def _no_check_runs(monkeypatch):
    from hubexport import catalog

    def check_all(*args, **kwargs):
        raise AssertionError("a check ran before the usage error")

    monkeypatch.setattr(catalog, "check_all", check_all)


@pytest.mark.notf
def test_check_without_a_path_is_a_usage_error(capsys, monkeypatch):
    _no_check_runs(monkeypatch)
    assert run("check") == 2
    assert "check needs one or more SavedModel directories and received none" in _one_line_error(capsys)


@pytest.mark.notf
def test_check_of_a_missing_path_or_a_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    _no_check_runs(monkeypatch)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"x")
    for path, said in ((tmp_path / "nope", "does not exist"), (archive, "is not a directory")):
        assert run("check", str(tmp_path), str(path)) == 2
        error = _one_line_error(capsys)
        assert f"{path} {said}; pass a SavedModel directory" in error
        assert "--task" not in error


@pytest.mark.notf
@pytest.mark.parametrize("flag", ["json_report", "junit_xml"])
def test_an_unwritable_report_is_refused_before_any_check(tmp_path, capsys, monkeypatch,
                                                          read_only_dir, flag):
    _no_check_runs(monkeypatch)
    (tmp_path / "model").mkdir()
    for path, said in ((tmp_path / "missing" / "r", "is not a directory"),
                       (os.path.join(read_only_dir, "r"), f"{read_only_dir} is not writable"),
                       (tmp_path, "is a directory; pass a file path")):
        assert run("check", str(tmp_path / "model"), f"--{flag}={path}") == 2
        error = _one_line_error(capsys)
        assert error.startswith(f"hubexport: error: --{flag}={path} ") and said in error


@pytest.mark.notf
def test_export_all_refuses_an_unwritable_summary_before_any_export(tmp_path, capsys,
                                                                    read_only_dir):
    report = os.path.join(read_only_dir, "summary.json")
    assert run("export_all", "--config_dir=c", f"--output_dir={tmp_path / 'o'}",
               f"--json_report={report}") == 2
    assert f"--json_report={report} cannot be written" in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("interrupt", [
    KeyboardInterrupt(),
    RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized active "
                 "exception types: ORIGINAL KeyboardInterrupt REPLACED BY KeyboardInterrupt: "
                 "<EMPTY MESSAGE>"),
])
def test_ctrl_c_exits_130_with_one_line(tmp_path, capsys, monkeypatch, interrupt):
    from hubexport import catalog

    def interrupted(*args, **kwargs):
        raise interrupt

    monkeypatch.setattr(catalog, "check_all", interrupted)
    (tmp_path / "model").mkdir()
    assert run("check", str(tmp_path / "model")) == 130
    assert _one_line_error(capsys) == (
        "hubexport: error: interrupted; no partial output was left behind")
    # An ordinary failure is still exit 1.
    monkeypatch.setattr(catalog, "check_all", lambda *a, **k: 1 / 0)
    assert run("check", str(tmp_path / "model")) == 1


def test_ctrl_c_during_an_export_leaves_nothing_and_exits_130(tmp_path, capsys, monkeypatch):
    from test_export import _fake_export_steps

    from hubexport import export

    _fake_export_steps(monkeypatch)

    def interrupted_inside_tensorflow(*args):
        raise RuntimeError("pybind11::error_already_set: ... KeyboardInterrupt")

    monkeypatch.setattr(export, "verify", interrupted_inside_tensorflow)
    assert run("export", "--architecture=MobileNetV2", "--task=feature_vector",
               "--image_size=32", "--weights=none", f"--output={tmp_path / 'model'}") == 130
    _one_line_error(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.notf
def test_export_overwrite_refuses_the_users_folder_and_inputs(tmp_path, capsys):
    config = _write(tmp_path / "m.toml", 'architecture = "MobileNetV2"\n'
                                         'task = "feature_vector"\nimage_size = 32\n')
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("mine")
    common = ("export", "--weights=none", "--overwrite_any_saved_model")
    assert run(*common, f"--config={config}", f"--output={tmp_path}") == 2
    assert f"--output={tmp_path} contains the input {config}; " in _one_line_error(capsys)
    assert run(*common, f"--config={config}", f"--output={tmp_path / 'src'}", "--overwrite") == 2
    assert "holds 1 entry and no saved_model.pb: code.py;" in _one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["m.toml", "src"]
    assert (tmp_path / "src" / "code.py").read_text() == "mine"


@pytest.mark.notf
def test_usage_errors_come_before_tensorflow_is_imported(tmp_path):
    """Refusals are instant: no TensorFlow import (seconds) before them."""
    (tmp_path / "mine.txt").write_text("mine")
    code = ("import sys; from absl import flags; from hubexport import cli\n"
            "for args in ([], ['/nope'], ['.', '--json_report=/nope/r.json']):\n"
            "    print(cli.main(flags.FLAGS(['hubexport', 'check', *args])))\n"
            "flags.FLAGS.unparse_flags()\n"
            "print(cli.main(flags.FLAGS(['hubexport', 'export', '--architecture=MobileNetV2',"
            f" '--task=feature_vector', '--weights=none', '--overwrite', '--output={tmp_path}'])))\n"
            "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.stdout.split() == ["2", "2", "2", "2", "False"], result.stderr
    assert result.stderr.count("hubexport: error: ") == 4


def test_an_interrupted_export_all_says_what_finished_and_exits_130(tmp_path, capsys,
                                                                   monkeypatch):
    from hubexport.batch import scheduler

    configs = tmp_path / "configs"
    configs.mkdir()
    for name, arch in (("a", "MobileNetV2"), ("b", "MobileNetV3Small"), ("c", "VGG16")):
        _write(configs / f"{name}.toml", f'architecture = "{arch}"\ntask = "feature_vector"\n')

    def interrupted_after_two(jobs, parallel, on_outcome, **kwargs):
        on_outcome(scheduler.Outcome(jobs[0], {"ok": True}, 1.0))
        on_outcome(scheduler.Outcome(jobs[1], {"ok": False, "error": "boom"}, 2.0))
        raise KeyboardInterrupt

    monkeypatch.setattr(scheduler, "run", interrupted_after_two)
    assert run("export_all", f"--config_dir={configs}", f"--output_dir={tmp_path / 'o'}",
               "--weights=none", "--min_size", "--nocheck_exports") == 130
    out, err = capsys.readouterr()
    header, *rows, total = out.splitlines()[-5:]
    assert header.startswith("hubexport: model ")  # The table is one line of _say.
    assert sorted(row[41:53].strip() for row in rows) == ["FAILED", "exported", "not finished"]
    assert total.startswith(
        "3 models, 1 failed or not conforming, 1 not finished (interrupted), ")
    assert err.strip() == "hubexport: error: interrupted; no partial output was left behind"
