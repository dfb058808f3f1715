"""Checks SavedModels against HUB_CONTRACT.md: the runner and the Python API.

    report = checker.check("/tmp/mobilenet_v2")      # a reports.ModelReport
    code = checker.run(["/tmp/a", "/tmp/b"], junit_xml="checks.xml")

Every check of hubexport.check runs on every model and every finding is
collected: a check whose precondition is missing is reported as skipped with
the reason, and an exception inside a check becomes an error of that check,
never a traceback. The model is scanned for unsafe ops (F2) before it is
loaded, loaded once, and shared by the checks.

This module imports TensorFlow only when a check runs or check names are
validated (hubexport.check defines them), so a bad task or report path is
refused at once.
"""

import os
import sys
import tempfile
import time

from hubexport import grappler, reports
from hubexport.contract import TASKS
from hubexport.errors import UserError, summarize

TASK_CHOICES = ("auto",) + TASKS


def check(path, task="auto", allow_unsafe_ops=False, loaded=None, skip=(),
          on_start=None, on_result=None, require=()):
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
    on_start(check, context), on_result(CheckResult): called as each check
      starts and ends (hubexport.batch.worker reports them to its parent).
    require: optional consumers (keys of hubexport.check.REQUIRABLE, e.g.
      "litert") whose checks' warnings and "could not run" become errors.
    """
    _check_task(task)
    check_names(skip)
    required_checks(require)
    from hubexport import check as checks

    start = time.monotonic()
    context = checks.Context(path, task, allow_unsafe_ops, loaded)
    results = []
    with grappler.disabled():
        for entry in checks.CHECKS:
            if on_start:
                on_start(entry, context)
            results.append(_skipped(entry) if entry.name in skip
                           else _run_check(entry, context))
            if on_result:
                on_result(results[-1])
    return apply_require(reports.ModelReport(
        path, context.task, context.task_source, tuple(results), time.monotonic() - start
    ), require)


def required_checks(require):
    """The check names that `require` (names of hubexport.check.REQUIRABLE) makes
    errors; refuses another name. Imports no TensorFlow."""
    from hubexport import check as checks

    unknown = [name for name in require if name not in checks.REQUIRABLE]
    if unknown:
        raise UserError(f"--require names {', '.join(map(repr, unknown))}; allowed: "
                        f"{', '.join(checks.REQUIRABLE)} (e.g. --require=litert)")
    return {c for name in require for c in checks.REQUIRABLE[name]}


def apply_require(report, require):
    """`report` with the warnings and "could not run" of the required checks as errors.

    Done after the checks ran (here, and on the report a worker sent: in run()
    and in catalog.check_all with --jobs), so an optional consumer's check need
    not know whether it was asked for, nor the worker protocol carry it.
    """
    names = required_checks(require)
    if not names:
        return report
    import dataclasses

    def promoted(finding):
        if finding.check in names and finding.level in ("warning", "unavailable"):
            return dataclasses.replace(finding, level="error",
                                       message=f"{finding.message} (required: --require)")
        return finding

    results = tuple(dataclasses.replace(r, findings=tuple(map(promoted, r.findings)))
                    if r.check in names else r for r in report.results)
    return dataclasses.replace(report, results=results)


def all_checks():
    """hubexport.check.CHECKS (importing TensorFlow)."""
    from hubexport import check as checks

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
    from hubexport import check as checks

    def finding(level, message, hint=""):
        return reports.Finding(entry.name, entry.clause, level, message, hint)

    findings = []
    start = time.monotonic()
    try:
        for found in entry.function(context):
            findings.append(finding(found.level, found.message, found.hint))
    except checks.Unavailable as missing:
        findings.append(finding("unavailable", str(missing)))
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
    """Refuses a report path that cannot be written, before checking starts.

    Tried for real (a file made and removed in its directory), so a read-only
    directory or mount is refused now rather than after every check ran.
    """
    if path is None:
        return
    if not path:
        raise UserError(f"--{flag} is empty; pass a file path, or leave the flag out")
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise UserError(f"--{flag}={path} is a directory; pass a file path")
    if not os.path.isdir(directory):
        raise UserError(f"--{flag}={path} cannot be written: {directory} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hubexport-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--{flag}={path} cannot be written: {directory} is not writable "
                        f"({e.strerror}); choose a directory you can write to") from None
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise UserError(f"--{flag}={path} cannot be written: the file is read-only")


def _check_paths(paths):
    """Refuses an empty list, or a path that is not a directory, before any load."""
    if isinstance(paths, str):
        raise UserError(f"paths must be a list of directories; received the string {paths!r}")
    if not paths:
        raise UserError("check needs one or more SavedModel directories and received none "
                        "(an empty path variable?); e.g. hubexport check /tmp/mobilenet_v2")
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path} does not exist; pass a SavedModel directory, or a "
                            "directory of them")
        if not os.path.isdir(path):
            raise UserError(f"{path} is not a directory; pass a SavedModel directory (or a "
                            "directory of them; unpack an archive first)")


def validate(task, json_report=None, junit_xml=None, skip=(), paths=None, require=()):
    """Refuses a bad task, report path, model path or check name before any model is
    checked; imports TensorFlow only for check names (skip), so the rest is instant.

    paths: the PATHs to check (None: not validated here).
    """
    _check_task(task)
    required_checks(require)
    for flag, report_path in (("json_report", json_report), ("junit_xml", junit_xml)):
        _check_writable(flag, report_path)
    if skip:
        check_names(skip)
    if paths is not None:
        _check_paths(paths)


def run(paths, task="auto", json_report=None, junit_xml=None, strict=False,
        allow_unsafe_ops=False, out=sys.stdout, skip=(), limits=None, log=None,
        require=()):
    """`hubexport check`: checks every path, prints and writes the reports.

    Each model is checked in a child process within `limits` (see
    hubexport.batch.limits; default limits.default_limits()); with one path,
    log(line) gets a progress line as each check ends.

    Returns the exit code: 0 if every model conforms, 1 if any has an error
    (with strict, also a warning). Raises UserError for invalid arguments.
    """
    validate(task, json_report, junit_xml, skip, paths, require)
    model_reports = []
    for path in paths:
        from hubexport.batch import limits as isolation  # Its child runs check() on the path.

        report = isolation.check(path, task, allow_unsafe_ops, skip, limits, on_result=(
            isolation.progress(log) if log and len(paths) == 1 else None))
        report = apply_require(report, require)  # The worker ran the checks without it.
        out.write(reports.text([report], strict))
        out.flush()
        model_reports.append(report)
    if json_report:
        reports.write_json(model_reports, json_report, strict)
    if junit_xml:
        reports.write_junit_xml(model_reports, junit_xml, strict)
    return 1 if any(r.fails(strict) for r in model_reports) else 0
