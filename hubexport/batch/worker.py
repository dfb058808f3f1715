"""A worker process of the batch layer: exports and checks, a job at a time.

    python -m hubexport.batch.worker

Started (limits.WORKER) by hubexport.batch.scheduler (export_all, check
--jobs=N) and hubexport.batch.limits (check of one model). Reads one JSON job per line on
stdin and answers each with one JSON line on the stdout it was started with;
everything else the libraries print goes to stderr. A job is

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
("rss_bytes"), so the scheduler can replace a worker that grew.

Before its answer, a job that checks sends a line as each check starts,
{"started": NAME, "task": ..., "task_source": ...}, and ends, {"result":
CheckResult as a dict}: a parent that stops the job at its time or memory
limit (hubexport.batch.limits) keeps the checks that ended.
"""

import dataclasses
import json
import os
import signal
import sys
import time

from hubexport import startup
from hubexport.batch import memory


def _check(path, task="auto", strict=False, allow_unsafe_ops=False, loaded=None, skip=(),
           send=None):
    from hubexport import checker, reports

    report = checker.check(path, task, allow_unsafe_ops, loaded, skip, **_announcing(send))
    return {"report": reports.to_json([report], strict)["models"][0],
            "text": reports.text([report], strict)}


def _announcing(send):
    """checker.check's on_start and on_result hooks that send(message) each check's
    start and result (none without send)."""
    if send is None:
        return {}
    return {"on_start": lambda entry, context: send({"started": entry.name, "task": context.task,
                                                     "task_source": context.task_source}),
            "on_result": lambda result: send({"result": dataclasses.asdict(result)})}


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


def run_job(job, send=None):
    """One job's answer (without the memory fields); send(message) gets each check's
    start and result as it happens."""
    from hubexport.errors import UserError, summarize

    answer = {"ok": True}
    try:
        if "check" in job and isinstance(job["check"], str):
            answer.update(_check(job["check"], job.get("task", "auto"),
                                 job.get("strict", False), job.get("allow_unsafe_ops", False),
                                 skip=tuple(job.get("skip_checks", ())), send=send))
            return answer
        loaded = None
        if job.get("export") is not None:
            exported, loaded = _export(job)
            answer.update(exported)
        if job.get("check"):
            start = time.monotonic()
            answer.update(_check(job["output"], loaded=loaded,
                                 skip=tuple(job.get("skip_checks", ())), send=send))
            answer["check_seconds"] = time.monotonic() - start
    except UserError as e:
        return {**answer, "ok": False, "error": str(e)}
    except Exception as e:  # Reported as the model's failure; the worker goes on.
        return {**answer, "ok": False, "error": f"{type(e).__name__}: {summarize(e)}"}
    return answer


def _stop_with_parent():
    """Linux: SIGTERM when the parent dies, even if it was killed."""
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
    # Stopped by the parent, or the parent died: unwind, so that a running
    # export removes its staging directory.
    startup.interrupt_on_sigterm()
    _stop_with_parent()
    answers = _answer_channel()

    def send(message):
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    startup.quiet_tensorflow()
    for line in sys.stdin:
        memory.reset_peak()
        start = memory.read("VmRSS")
        answer = run_job(json.loads(line), send)
        answer.update(start_bytes=start, peak_bytes=memory.read("VmHWM"),
                      rss_bytes=memory.read("VmRSS"))
        send(answer)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
