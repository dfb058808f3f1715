"""Checks SavedModels against HUB_CONTRACT.md: the runner and the Python API.

    report = checker.check("/tmp/mobilenet_v2")      # a reports.ModelReport
    code = checker.run(["/tmp/a", "/tmp/b"], junit_xml="checks.xml")

Every check of hubexport.checks runs on every model and every finding is
collected: a check whose precondition is missing is reported as skipped with
the reason, and an exception inside a check becomes an error of that check,
never a traceback. The model is scanned for unsafe ops (F2) before it is
loaded, loaded once, and shared by the checks.

This module imports TensorFlow only when a check runs or check names are
validated (hubexport.checks defines them), so a bad task or report path is
refused at once.
"""

import os
import sys
import time

from hubexport import grappler, reports
from hubexport.architectures import TASKS
from hubexport.errors import UserError, summarize

TASK_CHOICES = ("auto",) + TASKS
BATCH = 3  # Images per call of a check.
GRADIENT_PIXELS = BATCH * 224 * 224  # The most pixels one gradient step of a check takes.


def gradient_batch(height, width):
    """Images per gradient step of a check: BATCH, fewer past 224x224 (1 at the least).

    A step keeps every activation for the backward pass: a batch of 3 at
    600x600 ran EfficientNetB7's gradient out of 24 GiB; a batch of 1 peaks
    at 14 GB. hubexport.catalog.estimate counts memory with it.
    """
    return min(BATCH, max(1, GRADIENT_PIXELS // (height * width)))


def check(path, task="auto", allow_unsafe_ops=False, loaded=None, skip=()):
    """Runs every check on the SavedModel directory `path`; returns a ModelReport.

    task: "auto" (from the provenance file, else from the serving_default
      output key), "feature_vector" or "classification".
    allow_unsafe_ops: load and call a model with ops that touch files,
      processes or the network (F2 then only warns).
    loaded: what tf.saved_model.load(path) already returned in this process
      (export.export(..., keep_loaded=True) after an export), used instead of
      loading again; still only after a clean F2 scan of the files.
    skip: names of checks not to run (each is reported as skipped, "not run:
      --skip_checks"); the checks that need what a skipped one prepares do
      that work themselves.
    """
    _check_task(task)
    check_names(skip)
    from hubexport import checks

    start = time.monotonic()
    context = checks.Context(path, task, allow_unsafe_ops, loaded)
    with grappler.disabled():
        results = tuple(_skipped(c) if c.name in skip else _run_check(c, context)
                        for c in checks.CHECKS)
    return reports.ModelReport(
        path, context.task, context.task_source, results, time.monotonic() - start
    )


def all_checks():
    """hubexport.checks.CHECKS (importing TensorFlow)."""
    from hubexport import checks

    return checks.CHECKS


def check_names(names):
    """Refuses a name that is not a check; returns `names` as a tuple."""
    known = [c.name for c in all_checks()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(
            f"--skip_checks names {', '.join(map(repr, unknown))}, which "
            f"{'is not a check' if len(unknown) == 1 else 'are not checks'}; "
            f"allowed: {', '.join(known)} (e.g. --skip_checks=tfsm_layer)")
    return tuple(names)


def _skipped(entry):
    finding = reports.Finding(entry.name, entry.clause, "skipped", "not run: --skip_checks")
    return reports.CheckResult(entry.name, entry.clause, (finding,), 0.0)


def _run_check(entry, context):
    """Runs one check; a Skip or an exception becomes a finding of that check."""
    from hubexport import checks

    def finding(level, message, hint=""):
        return reports.Finding(entry.name, entry.clause, level, message, hint)

    findings = []
    start = time.monotonic()
    try:
        for found in entry.function(context):
            findings.append(finding(found.level, found.message, found.hint))
    except checks.Skip as skip:
        findings.append(finding("skipped", str(skip)))
    except Exception as e:  # A check must never end the run with a traceback.
        findings.append(finding(
            "error",
            f"the check failed unexpectedly: {type(e).__name__}: {summarize(e)}",
            "if the model looks right, run hubexport.checker.check() in Python to "
            "see the traceback and report it",
        ))
    return reports.CheckResult(
        entry.name, entry.clause, tuple(findings), time.monotonic() - start
    )


def _check_task(task):
    if task not in TASK_CHOICES:
        raise UserError(
            f"Unknown task {task!r}; allowed: {', '.join(TASK_CHOICES)} "
            "(for example --task=auto)"
        )


def _check_writable(flag, path):
    """Refuses a report path whose directory is missing before checking starts."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or os.path.isdir(path):
        raise UserError(
            f"--{flag}={path} cannot be written: {directory} is not a directory"
            if not os.path.isdir(directory)
            else f"--{flag}={path} is a directory; pass a file path"
        )


def validate(task, json_report=None, junit_xml=None, skip=()):
    """Refuses a bad task, check name or report path before any model is checked."""
    _check_task(task)
    check_names(skip)
    for flag, report_path in (("json_report", json_report), ("junit_xml", junit_xml)):
        _check_writable(flag, report_path)


def run(paths, task="auto", json_report=None, junit_xml=None, strict=False,
        allow_unsafe_ops=False, out=sys.stdout, skip=()):
    """`hubexport check`: checks every path, prints and writes the reports.

    Returns the exit code: 0 if every model conforms, 1 if any has an error
    (with strict, also a warning). Raises UserError for invalid arguments.
    """
    if isinstance(paths, str) or not paths:
        raise UserError("check needs one or more SavedModel directories, e.g. "
                        "hubexport check /tmp/mobilenet_v2")
    validate(task, json_report, junit_xml, skip)
    model_reports = []
    for path in paths:
        report = check(path, task, allow_unsafe_ops, skip=skip)
        out.write(reports.text([report], strict))
        out.flush()
        model_reports.append(report)
    if json_report:
        reports.write_json(model_reports, json_report, strict)
    if junit_xml:
        reports.write_junit_xml(model_reports, junit_xml, strict)
    return 1 if any(r.fails(strict) for r in model_reports) else 0
