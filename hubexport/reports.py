"""What `hubexport check` found, and its three renderings: text, JSON, JUnit XML.

A ModelReport holds one CheckResult per check, in the order of
hubexport.check.CHECKS, whether the check passed, failed or was skipped, so
every rendering lists every check of every model: CI systems show a JUnit test
case per check, and a reader sees what was not verified and why.
"""

import dataclasses
import xml.etree.ElementTree as ET

from hubexport import atomic

JSON_FORMAT = "hubexport-check/1"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing a check found.

    level is "error", "warning", "info", "skipped" (a precondition in the
    model is missing: the message names the check that explains it), or
    "unavailable" (the environment lacks what the check needs, e.g. an import
    fails: the check could not run, which is no pass, and --strict fails).
    """

    check: str
    clause: str
    level: str
    message: str
    hint: str = ""

    def line(self, path):
        hint = f". Fix: {self.hint}" if self.hint else ""
        return f"{path}: {self.level} {self.clause} {self.check}: {self.message}{hint}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: str
    clause: str
    findings: tuple
    seconds: float

    @property
    def status(self):
        """"error", "unavailable", "skipped", "warning" or "passed" (info does
        not count).

        An error found before a precondition turned out missing still fails.
        """
        levels = {f.level for f in self.findings}
        for level in ("error", "unavailable", "skipped", "warning"):
            if level in levels:
                return level
        return "passed"


@dataclasses.dataclass(frozen=True)
class ModelReport:
    path: str
    task: str | None  # "feature_vector", "classification", or None if unknown.
    task_source: str  # How the task was chosen, in words.
    results: tuple  # of CheckResult
    seconds: float

    @property
    def findings(self):
        return [f for r in self.results for f in r.findings]

    def count(self, level):
        return sum(f.level == level for f in self.findings)

    def fails(self, strict=False):
        """Errors fail; with strict, so do warnings and checks that could not run."""
        return self.count("error") > 0 or (
            strict and self.count("warning") + self.count("unavailable") > 0)

    def verdict(self, strict=False):
        return "FAILS" if self.fails(strict) else "CONFORMS"

    def summary(self, strict=False):
        errors, warnings = self.count("error"), self.count("warning")
        counts = (
            f"{errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}, "
            f"{self.count('skipped')} skipped"
        )
        unavailable = sorted({f.message for f in self.findings if f.level == "unavailable"})
        if unavailable:
            count = self.count("unavailable")
            counts += (f", {count} check{'s' * (count != 1)} could not run in this "
                       f"environment ({'; '.join(unavailable)})"
                       + ("" if strict else ", which --strict fails"))
        task = self.task or "unknown"
        return (
            f"{self.path}: {self.verdict(strict)} ({counts}; task {task}, "
            f"{self.task_source}; {self.seconds:.1f}s)"
        )


def text(reports, strict=False):
    """One line per finding, then one summary line per model.

    Checks skipped for the same reason share one line, so that the one error
    that made most checks impossible is not lost among them.
    """
    lines = []
    for report in reports:
        skipped = {}
        for f in report.findings:
            if f.level in ("skipped", "unavailable"):
                word = "skipped" if f.level == "skipped" else "could not run"
                skipped.setdefault((word, f.message), []).append(f"{f.clause} {f.check}")
            else:
                lines.append(f.line(report.path))
        for (word, reason), checks in skipped.items():
            lines.append(f"{report.path}: {word} {', '.join(checks)}: {reason}")
        lines.append(report.summary(strict))
    return "\n".join(lines) + "\n"


def to_json(reports, strict=False):
    return {
        "format": JSON_FORMAT,
        "strict": strict,
        "conforms": not any(r.fails(strict) for r in reports),
        "models": [_model_json(r, strict) for r in reports],
    }


def _model_json(report, strict):
    return {
        "path": report.path,
        "verdict": report.verdict(strict).lower(),
        "task": report.task,
        "task_source": report.task_source,
        "seconds": round(report.seconds, 3),
        "checks": [
            {
                "check": r.check,
                "clause": r.clause,
                "status": r.status,
                "seconds": round(r.seconds, 3),
                "findings": [
                    {"level": f.level, "message": f.message, "hint": f.hint}
                    for f in r.findings
                ],
            }
            for r in report.results
        ],
    }


def from_json(model):
    """The ModelReport of one entry of to_json(...)["models"]."""
    results = tuple(
        CheckResult(c["check"], c["clause"],
                    tuple(Finding(c["check"], c["clause"], f["level"], f["message"], f["hint"])
                          for f in c["findings"]),
                    c["seconds"])
        for c in model["checks"]
    )
    return ModelReport(model["path"], model["task"], model["task_source"], results,
                       model["seconds"])


def failed(path, check, message, seconds=0.0):
    """A ModelReport of one error: the model could not be checked at all."""
    finding = Finding(check, "-", "error", message)
    return ModelReport(path, None, "unknown", (CheckResult(check, "-", (finding,), seconds),),
                       seconds)


def write_json(reports, path, strict=False):
    """The JSON report in place of `path`, whole or not at all."""
    atomic.write_json(path, to_json(reports, strict), indent=2)


def junit_xml(reports, strict=False):
    """One <testsuite> per model, one <testcase> per check.

    classname is the model path and name is "CLAUSE check", so CI lists the
    checks grouped by model. An error (or, with strict, a warning) is a
    <failure>; so, with strict, is a check that could not run; a skipped
    check is <skipped> with the reason; warnings and info go to <system-out>.
    """
    root = ET.Element("testsuites", name="hubexport check")
    for report in reports:
        suite = ET.SubElement(root, "testsuite", name=report.path)
        for result in report.results:
            _testcase(suite, report.path, result, strict)
        failures = sum(bool(_failing(r, strict)) for r in report.results)
        skipped = sum(
            r.status in ("skipped", "unavailable") and not _failing(r, strict)
            for r in report.results
        )
        suite.attrib.update(
            tests=str(len(report.results)),
            failures=str(failures),
            errors="0",
            skipped=str(skipped),
            time=f"{report.seconds:.3f}",
        )
    _sum_attributes(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _failing(result, strict):
    """The findings that make `result` fail: errors, and if strict warnings
    and what could not run."""
    return [
        f for f in result.findings
        if f.level == "error" or (strict and f.level in ("warning", "unavailable"))
    ]


def _testcase(suite, path, result, strict):
    case = ET.SubElement(
        suite,
        "testcase",
        classname=path,
        name=f"{result.clause} {result.check}",
        time=f"{result.seconds:.3f}",
    )
    failing = _failing(result, strict)
    if failing:
        failure = ET.SubElement(
            case, "failure", message=failing[0].message, type=failing[0].level
        )
        failure.text = "\n".join(f.line(path) for f in failing)
    elif result.status in ("skipped", "unavailable"):
        reason = next(f.message for f in result.findings if f.level == result.status)
        word = "" if result.status == "skipped" else "could not run: "
        ET.SubElement(case, "skipped", message=word + reason)
    others = [
        f for f in result.findings if f.level in ("warning", "info") and f not in failing
    ]
    if others:
        ET.SubElement(case, "system-out").text = "\n".join(f.line(path) for f in others)


def _sum_attributes(root):
    for name in ("tests", "failures", "errors", "skipped"):
        root.set(name, str(sum(int(s.get(name)) for s in root)))
    root.set("time", f"{sum(float(s.get('time')) for s in root):.3f}")


def write_junit_xml(reports, path, strict=False):
    """The JUnit XML report in place of `path`, whole or not at all."""
    with atomic.replacing(path) as f:
        f.write(junit_xml(reports, strict))
