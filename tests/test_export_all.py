"""export_all and check over many models, through the command line: worker
processes, shards, resuming, interrupts, and the summary."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from test_cli import run

from hubexport import atomic, catalog, export
from hubexport.batch import scheduler
from hubexport.errors import UserError


def _configs(directory, extra=None):
    """Two small catalog configs (full size in the file; runs use --min_size)."""
    directory.mkdir(exist_ok=True)
    extra = extra or {}
    for name, architecture, task in (("v3small_fv", "MobileNetV3Small", "feature_vector"),
                                     ("v2_classifier", "MobileNetV2", "classification")):
        (directory / f"{name}.toml").write_text(
            f'architecture = "{architecture}"\ntask = "{task}"\n'
            f'image_size = 224\nweights = "imagenet"\n{extra.get(name, "")}')
    return str(directory)


def _mtimes(directory):
    return {name: os.stat(os.path.join(directory, name, "saved_model.pb")).st_mtime_ns
            for name in os.listdir(directory) if not name.startswith(".")}


@pytest.mark.slow
def test_shards_export_and_check_the_catalog_and_a_rerun_redoes_nothing(tmp_path, capsys):
    configs = _configs(tmp_path / "configs")
    out = tmp_path / "models"
    common = ["export_all", f"--config_dir={configs}", f"--output_dir={out}",
              "--weights=none", "--min_size"]
    assert run(*common, "--shard=0/2") == 0
    first = capsys.readouterr().out
    report = tmp_path / "summary.json"
    assert run(*common, "--shard=1/2", "--jobs=2", f"--json_report={report}") == 0
    second = capsys.readouterr().out
    # Each machine of a two-machine matrix exports one model, and checks it.
    for output in (first, second):
        assert "1 models (shard" in output and "[1/1] " in output
        assert "CONFORMS" in output.split("[1/1] ")[1].splitlines()[0]
    assert sorted(_mtimes(out)) == ["v2_classifier", "v3small_fv"]
    summary = json.loads(report.read_text())
    (row,) = summary["models"]
    assert (row["status"], row["verdict"]) == ("exported", "CONFORMS")
    assert row["size"] > 1e6 and row["peak"] > 1e8 and row["seconds"] > 0

    before = _mtimes(out)
    assert run(*common, "--jobs=2") == 0
    again = capsys.readouterr().out
    assert "2 models: 2 done before, 0 to run" in again
    assert again.count("done before") == 4 and "[1/" not in again  # Header, 2 rows, total.
    # The total counts this run's work only, not the earlier run's seconds.
    assert "2 models, 0 failed or not conforming, 2 done before, 0s of work in this run" in again
    assert _mtimes(out) == before
    # Models checked in full are done for a run that skips checks, of one task.
    assert run(*common, "--task=classification", "--skip_checks=tfsm_layer") == 0
    assert "1 models (classification): 1 done before, 0 to run" in capsys.readouterr().out

    junit = tmp_path / "checks.xml"
    assert run("check", str(out), "--jobs=2", f"--junit_xml={junit}") == 0
    checked = capsys.readouterr().out
    assert checked.count("CONFORMS") >= 4  # Each model's report, and the summary.
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert sorted(os.path.basename(s.get("name")) for s in suites) == [
        "v2_classifier", "v3small_fv"]


def _wait_for(condition, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_an_interrupted_run_leaves_nothing_partial_and_resumes(tmp_path, capsys):
    configs = _configs(tmp_path / "configs")
    out = tmp_path / "models"
    args = ["export_all", f"--config_dir={configs}", f"--output_dir={out}",
            "--weights=none", "--min_size", "--nocheck_exports"]
    process = subprocess.Popen(
        [sys.executable, "-c", "from hubexport import cli; cli.run()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def staging():
        return out.exists() and any(".partial-" in name for name in os.listdir(out))

    assert _wait_for(staging), process.communicate()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert stderr.strip() == "hubexport: error: interrupted; no partial output was left behind"
    assert sorted(os.listdir(out)) == [catalog.STATE_DIR]

    # What a killed worker would have left is removed, and the run resumes.
    (out / ".v3small_fv.partial-killed").mkdir()
    assert run(*args, "--jobs=2") == 0
    assert "2 models: 0 done before, 2 to run" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [catalog.STATE_DIR, "v2_classifier", "v3small_fv"]
    key = export.read_provenance(str(out / "v3small_fv"))["request_key"]

    # Another config for an existing model: refused, then replaced on request.
    _configs(tmp_path / "configs", extra={"v3small_fv": 'pooling = "max"\n'})
    assert run(*args) == 1
    refused = capsys.readouterr().out
    assert "1 done before, 1 refused, 0 to run" in refused
    assert "exists from another config, weights or library version; pass --overwrite" in refused
    assert run(*args, "--overwrite") == 0
    assert "1 done before, 1 to run" in capsys.readouterr().out
    replaced = export.read_provenance(str(out / "v3small_fv"))
    assert replaced["request_key"] != key and replaced["pooling"] == "max"

    # Exported without checks: a run with checks checks it, and exports nothing.
    before = _mtimes(out)
    assert run(*args[:-1], "--task=classification", "--skip_checks=tfsm_layer") == 0
    checked = capsys.readouterr().out
    assert "1 models (classification): 0 done before, 1 to run" in checked
    assert "v2_classifier: CONFORMS" in checked and "v3small_fv" not in checked.split("\n", 1)[1]
    assert _mtimes(out) == before

    # Checks skipped per model (the catalog tier's way): a record that skipped
    # more than its model's skip now is checked again; then nothing is redone.
    report = tmp_path / "summary.json"

    def skip(plan):
        return ("tfsm_layer",) if plan.task == "feature_vector" else ()

    def export_all(**kwargs):
        return catalog.export_all(configs, str(out), {"weights": "none"}, min_size=True,
                                  skip_checks=skip, json_report=str(report), **kwargs)

    assert export_all(log=lambda message: None) == 0
    not_run = {row["name"]: [c["check"] for c in row["report"]["checks"]
                             if any(f["message"] == "not run: --skip_checks"
                                    for f in c["findings"])]
               for row in json.loads(report.read_text())["models"]}
    assert not_run == {"v2_classifier": [], "v3small_fv": ["tfsm_layer"]}
    assert _mtimes(out) == before
    said = []
    assert export_all(log=said.append) == 0
    assert "2 models: 2 done before, 0 to run" in said[0]
    with pytest.raises(UserError, match="'tfsm', which is not a check"):
        catalog.export_all(configs, str(out), {"weights": "none"}, min_size=True,
                           skip_checks=lambda plan: ("tfsm",))


def test_export_all_refuses_to_replace_a_folder_that_hubexport_did_not_write(tmp_path, capsys):
    configs = _configs(tmp_path / "configs")
    out = tmp_path / "models"
    (out / "v3small_fv").mkdir(parents=True)
    (out / "v3small_fv" / "code.py").write_text("mine")
    args = ["export_all", f"--config_dir={configs}", f"--output_dir={out}", "--weights=none",
            "--min_size", "--task=feature_vector", "--nocheck_exports"]
    for flag in ("--overwrite", "--overwrite_any_saved_model"):
        assert run(*args, flag) == 1
        said = capsys.readouterr().out
        assert "1 models (feature_vector): 0 done before, 1 refused, 0 to run" in said
        assert "holds 1 entry and no saved_model.pb: code.py;" in said
        assert (out / "v3small_fv" / "code.py").read_text() == "mine"


def test_export_all_refuses_an_output_that_holds_its_config(tmp_path, capsys):
    out = tmp_path / "models"
    out.mkdir()
    configs = _configs(out / "v3small_fv")
    assert run("export_all", f"--config_dir={configs}", f"--output_dir={out}", "--weights=none",
               "--min_size", "--task=feature_vector", "--overwrite_any_saved_model") == 1
    said = capsys.readouterr().out
    assert f"{out / 'v3small_fv'} contains the input {configs}/v3small_fv.toml" in said
    assert sorted(os.listdir(out / "v3small_fv")) == ["v2_classifier.toml", "v3small_fv.toml"]


# A stand-in worker for export_all's jobs: it answers each at once, but the
# export of the model named by its argument writes its staging directory and
# never ends.
_HANGING_EXPORT = """
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    name = os.path.basename(job["output"])
    if name == sys.argv[1]:
        os.makedirs(os.path.join(os.path.dirname(job["output"]), f".{name}.partial-1"))
        time.sleep(60)
    print(json.dumps({"ok": True, "peak_bytes": 1}), flush=True)
"""


@pytest.mark.parametrize("jobs", ["--jobs=1", "--jobs=2"])
def test_an_export_past_its_time_limit_fails_and_the_run_goes_on(tmp_path, capsys, monkeypatch,
                                                                 jobs):
    configs = _configs(tmp_path / "configs")
    out = tmp_path / "models"
    plans = catalog.catalog_plans(configs, {"weights": "none"}, min_size=True)
    # The first to run (the largest estimate) hangs; with --jobs=1 the other runs after it.
    hangs, other = (name for name, _, _ in
                    sorted(plans, key=lambda p: -catalog.estimate(p[2])[1]))
    stand_in = (sys.executable, "-c", _HANGING_EXPORT, hangs)
    monkeypatch.setattr(scheduler, "run", functools.partial(scheduler.run, worker_command=stand_in))
    report = tmp_path / "summary.json"
    assert run("export_all", f"--config_dir={configs}", f"--output_dir={out}", "--weights=none",
               "--min_size", "--nocheck_exports", "--timeout_s=1", jobs,
               f"--json_report={report}") == 1
    said = capsys.readouterr().out
    error = "stopped during export: the model exceeded the time limit of 1 s (--timeout_s)"
    assert f"{hangs}: FAILED: {error} in " in said and f"{other}: done in " in said
    if jobs == "--jobs=1":  # One after the other: the run went on past the kill.
        assert said.index(f"[1/2] {hangs}: FAILED") < said.index(f"[2/2] {other}: done")
    rows = {row["name"]: row for row in json.loads(report.read_text())["models"]}
    assert (rows[hangs]["status"], rows[hangs]["error"]) == ("FAILED", error)
    assert rows[other]["status"] == "exported"
    assert "2 models, 1 failed or not conforming" in said
    assert sorted(os.listdir(out)) == [catalog.STATE_DIR]  # Its staging removed.


@pytest.mark.notf
def test_a_previous_export_retired_by_a_killed_install_comes_back(tmp_path):
    """Killed between _install's two renames, the old export sits in a retired
    directory and the output is missing: the clean-up moves it back (deleting
    it would lose the user's export) and removes staging and retired leftovers."""
    out = tmp_path / "models"
    retired = out / ".m.old-abc" / "model"
    retired.mkdir(parents=True)
    (retired / "saved_model.pb").write_text("old export")
    (out / ".m.partial-xyz").mkdir()
    (out / ".other.old-1" / "model").mkdir(parents=True)
    atomic.clean_up_beside(str(out / "m"))
    assert (out / "m" / "saved_model.pb").read_text() == "old export"
    assert sorted(os.listdir(out)) == [".other.old-1", "m"]

    (out / ".m.old-def" / "model").mkdir(parents=True)  # The new export did arrive.
    atomic.clean_up_beside(str(out / "m"))
    assert sorted(os.listdir(out)) == [".other.old-1", "m"]
    assert (out / "m" / "saved_model.pb").read_text() == "old export"
