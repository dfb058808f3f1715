"""A check that could not run is no pass: reported as such, and --strict fails.

tensorflow_hub is made unimportable (as setuptools>=82 makes it, removing
pkg_resources), so the K1 checks cannot run on a conforming model.
"""

import json
import sys
import xml.etree.ElementTree as ET

import pytest

from hubexport import check, checker, reports

import mutants

K1 = ("hub_fine_tuning", "hub_frozen")


@pytest.fixture(scope="module")
def without_hub(tmp_path_factory):
    """The report of the good model's K1 checks, tensorflow_hub unimportable."""
    path = str(tmp_path_factory.mktemp("verdict") / "good")
    mutants.good(path)
    others = tuple(c.name for c in check.CHECKS if c.name not in K1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "tensorflow_hub", None)  # import raises ImportError
        return checker.check(path, skip=others)


def test_the_checks_are_reported_as_unavailable(without_hub):
    statuses = {r.check: r.status for r in without_hub.results if r.check in K1}
    assert statuses == {"hub_fine_tuning": "unavailable", "hub_frozen": "unavailable"}
    message = next(r for r in without_hub.results if r.check == "hub_frozen").findings[0].message
    assert message.startswith("tensorflow_hub cannot be imported")


def test_the_default_verdict_says_how_many_could_not_run_and_why(without_hub):
    assert not without_hub.fails()
    summary = without_hub.summary()
    assert "CONFORMS" in summary
    assert "2 checks could not run in this environment (tensorflow_hub cannot be imported" in summary
    assert "which --strict fails" in summary
    assert "could not run K1 hub_fine_tuning, K1 hub_frozen: tensorflow_hub" in reports.text(
        [without_hub])


def test_strict_fails_on_a_check_that_could_not_run(without_hub):
    assert without_hub.fails(strict=True)
    assert "FAILS" in without_hub.summary(strict=True)
    document = reports.to_json([without_hub], strict=True)
    assert document["conforms"] is False
    statuses = {c["check"]: c["status"] for c in document["models"][0]["checks"]}
    assert statuses["hub_frozen"] == "unavailable"
    suite = ET.fromstring(reports.junit_xml([without_hub], strict=True)).find("testsuite")
    assert suite.get("failures") == "2"
    lenient = ET.fromstring(reports.junit_xml([without_hub])).find("testsuite")
    assert lenient.get("failures") == "0"
    case = next(c for c in lenient if c.get("name") == "K1 hub_frozen")
    assert case.find("skipped").get("message").startswith("could not run: tensorflow_hub")


def test_a_skipped_precondition_does_not_fail_strict():
    """Skips that the model explains (another check failed) stay as they were."""
    finding = reports.Finding("loads", "R1", "skipped", "the model did not load (see loads)")
    result = reports.CheckResult("loads", "R1", (finding,), 0.0)
    report = reports.ModelReport("m", None, "x", (result,), 0.0)
    assert not report.fails(strict=True)


def test_reports_round_trip_the_level(without_hub):
    document = json.loads(json.dumps(reports.to_json([without_hub])))
    again = reports.from_json(document["models"][0])
    assert again.count("unavailable") == 2 and again.fails(strict=True)


@pytest.mark.parametrize("write", [reports.write_json, reports.write_junit_xml])
def test_a_report_that_fails_while_being_written_leaves_the_previous_one(
        tmp_path, monkeypatch, without_hub, write):
    path = tmp_path / "report"
    path.write_text("the previous report")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken)
    monkeypatch.setattr(reports, "junit_xml", broken)
    with pytest.raises(OSError, match="disk full"):
        write([without_hub], str(path))
    assert path.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
