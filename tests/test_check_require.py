"""check --require with --jobs=N: the parent applies the requirement to each
report a worker sends (checker.apply_require, as checker.run does for one job),
so a required optional consumer fails the model whichever way it was checked.

One model per job (two workers, each importing TensorFlow, per run): the
string-op mutant, whose only finding is litert_conversion's warning, and the
good one, which converts.
"""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

# catalog now, at collection, as tests/test_isolation.py does (check_all's `out`).
from hubexport import catalog, cli  # noqa: F401

import mutants


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A directory of two SavedModels: strings (mutants.string_op_serving), good."""
    root = tmp_path_factory.mktemp("require")
    mutants.string_op_serving(str(root / "strings"))
    mutants.good(str(root / "good"))
    return root


def _check(*args):
    with flagsaver.flagsaver():
        return cli.main(flags.FLAGS(["hubexport", "check", *args]))


def _litert(model):
    (check,) = [c for c in model["checks"] if c["check"] == "litert_conversion"]
    return check


@pytest.mark.slow
def test_require_litert_fails_the_model_that_needs_flex_ops_with_many_jobs(
        models, tmp_path, capsys):
    report = tmp_path / "required.json"
    assert _check(str(models), "--jobs=2", "--require=litert",
                  f"--json_report={report}") == 1
    out = capsys.readouterr().out
    by_name = {os.path.basename(m["path"]): m for m in json.loads(report.read_text())["models"]}
    strings = by_name["strings"]
    assert strings["verdict"] == "fails" and by_name["good"]["verdict"] == "conforms"
    litert = _litert(strings)
    assert litert["status"] == "error"
    assert litert["findings"][-1]["message"].endswith("(required: --require)")
    assert all(c["status"] != "error" for c in strings["checks"] if c is not litert)
    # The progress line and the summary table say it too, naming the model.
    assert f"{models / 'strings'}: FAILS in " in out
    assert f"{models / 'good'}: CONFORMS in " in out
    (row,) = [line for line in out.splitlines() if line.startswith(str(models / "strings"))
              and " checked " in line]
    assert row.endswith("FAILS")

    report = tmp_path / "optional.json"
    assert _check(str(models), "--jobs=2", f"--json_report={report}") == 0
    by_name = {os.path.basename(m["path"]): m for m in json.loads(report.read_text())["models"]}
    assert by_name["strings"]["verdict"] == "conforms"
    assert _litert(by_name["strings"])["status"] == "warning"
