"""A worker process of hubexport.runner: exports and checks, one job at a time.

    python -m hubexport.worker

Reads one JSON job per line on stdin and answers each with one JSON line on
the stdout it was started with; everything else the libraries print goes to
stderr. A job is

  {"export": {settings of export.plan}, "output": DIR, "overwrite": bool,
   "overwrite_any_saved_model": bool, "inputs": [config and labels files],
   "check": bool, "skip_checks": [names]}   export (unless "export" is null),
                                            then check DIR
  {"check": DIR, "task": ..., "strict": bool, "allow_unsafe_ops": bool,
   "skip_checks": [names]}

and its answer {"ok": true, ...} with the export's seconds and the check's
report as JSON (hubexport.reports.to_json), or {"ok": false, "error": one
line}. Each answer carries the job's peak memory ("peak_bytes", the resident
set's high-water mark since the job started) and the worker's memory after it
("rss_bytes"), so the runner can replace a worker that grew.
"""

import json
import os
import signal
import sys
import time

_STATUS = "/proc/self/status"


def _memory(field, status=_STATUS):
    """VmHWM / VmRSS of this process in bytes (0 where /proc is missing).

    status: another file of "Field: N kB" lines (/proc/PID/status, /proc/meminfo).
    """
    try:
        with open(status) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak():
    """Starts a new high-water mark for VmHWM (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _check(path, task="auto", strict=False, allow_unsafe_ops=False, loaded=None, skip=()):
    from hubexport import checker, reports

    report = checker.check(path, task, allow_unsafe_ops, loaded, skip)
    return {"report": reports.to_json([report], strict)["models"][0],
            "text": reports.text([report], strict)}


def _export(job):
    """(answer fields, the loaded export for the check that follows, or None)."""
    from hubexport import export

    plan = export.plan(**job["export"])
    result = export.export(plan, job["output"], overwrite=job.get("overwrite", False),
                           keep_loaded=bool(job.get("check")),
                           overwrite_any_saved_model=job.get("overwrite_any_saved_model", False),
                           inputs=tuple(job.get("inputs", ())))
    return {"export_seconds": result.seconds,
            "max_relative_difference": result.max_relative_difference}, result.loaded


def run_job(job):
    """One job's answer (without the memory fields)."""
    from hubexport.errors import UserError, summarize

    answer = {"ok": True}
    try:
        if "check" in job and isinstance(job["check"], str):
            answer.update(_check(job["check"], job.get("task", "auto"),
                                 job.get("strict", False), job.get("allow_unsafe_ops", False),
                                 skip=tuple(job.get("skip_checks", ()))))
            return answer
        loaded = None
        if job.get("export") is not None:
            exported, loaded = _export(job)
            answer.update(exported)
        if job.get("check"):
            start = time.monotonic()
            answer.update(_check(job["output"], loaded=loaded,
                                 skip=tuple(job.get("skip_checks", ()))))
            answer["check_seconds"] = time.monotonic() - start
    except UserError as e:
        return {**answer, "ok": False, "error": str(e)}
    except Exception as e:  # Reported as the model's failure; the worker goes on.
        return {**answer, "ok": False, "error": f"{type(e).__name__}: {summarize(e)}"}
    return answer


def _interrupt():
    raise KeyboardInterrupt


def _stop_with_parent():
    """Linux: SIGTERM when the runner dies, even if it was killed."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answer_channel():
    """The stdout we were given, for answers only; fd 1 goes to stderr from now on,
    so that what the libraries print cannot corrupt an answer."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return answers


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Stopped by the runner, or the runner died: unwind, so that a running
    # export removes its staging directory.
    signal.signal(signal.SIGTERM, lambda signum, frame: _interrupt())
    _stop_with_parent()
    answers = _answer_channel()
    from hubexport import cli

    cli.quiet_tensorflow()
    for line in sys.stdin:
        _reset_peak()
        start = _memory("VmRSS")
        answer = run_job(json.loads(line))
        answer.update(start_bytes=start, peak_bytes=_memory("VmHWM"), rss_bytes=_memory("VmRSS"))
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
