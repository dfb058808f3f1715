"""Runs the checks of one model in a child process, within a time and a memory limit.

    report = isolation.check("/tmp/m", limits=isolation.Limits(600, 8e9), on_result=print)

A SavedModel is a program, and the F2 scan only proves that it touches
nothing outside itself: its `__call__` may still loop forever (a While loop
whose condition stays true is plain math), block on a queue, or allocate
100 GB. Checked in the CLI's own process, such a model hangs the CI job or
has the kernel's OOM killer end it. So `hubexport check` runs the checks of
each model in a child, `python -m hubexport.isolation`, which runs the same
checker.check (the F2 scan still comes before any load) and writes one JSON
line as each check starts and ends (hubexport.worker's answer channel: what
the libraries print goes to stderr). The parent passes each finished
CheckResult on as it arrives (the progress lines), and stops the child's
whole process group with SIGKILL once the wall clock since its start passes
`Limits.seconds` or its resident memory (VmRSS, polled from /proc/PID/status
every POLL_S) passes `Limits.memory_bytes`. Not RLIMIT_AS: TensorFlow
reserves far more virtual address space than it touches and fails under it.

The report stays whole: the checks that ended keep their findings, the one
that was running gets an error naming the limit, and the ones after it are
skipped ("not run: ..."). A child that dies on its own (a crash, the OOM
killer) is reported the same way, naming the signal.
"""

import dataclasses
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

from hubexport import checker, reports, worker

# The longest check of a catalog model at full size took about 200 s
# (BUILD_NOTES.md: ResNetRS420 at 320x320, export and check 205 s;
# EfficientNetB7 at 600x600, check 85 s; EfficientNetV2L at 32x32, 181 s), up to
# 1.9x slower on a slow day and 1.4x beside another model: about 530 s. The
# default leaves more than 3x on top of that.
DEFAULT_TIMEOUT_S = 1800
# Of the machine's RAM (MemTotal) a model may use by default: the rest is for
# this process (TensorFlow imported: under 1 GB), the system, and what the
# child can allocate between two polls. The catalog's largest peak, export and
# check together, is 16.1 GB: 64% of the 25.3 GB (MemTotal) of the machine it ran on.
MEMORY_SHARE = 0.8
POLL_S = 0.1
CHILD = (sys.executable, "-m", "hubexport.isolation")


@dataclasses.dataclass(frozen=True)
class Limits:
    seconds: float  # Wall clock per model, from the start of its child process.
    memory_bytes: float  # Resident memory of the child; math.inf for none.


@dataclasses.dataclass(frozen=True)
class _Stop:
    """Why the child was stopped or ended early: said by every check it cut off."""

    reason: str  # "the model exceeded the time limit of 600 s (--timeout_s)"
    hint: str
    detail: str = ""  # Only in the running check's error.


def default_memory_bytes():
    """MEMORY_SHARE of MemTotal (/proc/meminfo); no limit where it cannot be read."""
    total = worker._memory("MemTotal", "/proc/meminfo")
    return MEMORY_SHARE * total if total else math.inf


def default_limits():
    return Limits(DEFAULT_TIMEOUT_S, default_memory_bytes())


def check(path, task="auto", allow_unsafe_ops=False, skip=(), limits=None,
          on_result=None, command=CHILD):
    """checker.check(path, task, allow_unsafe_ops, skip=skip) in a child; a ModelReport.

    limits: a Limits (default: default_limits()).
    on_result(CheckResult): called in this process as each check ends, in order.
    command: how to start the child (tests use stand-ins).
    """
    limits = limits or default_limits()
    seen = _Progress(on_result or (lambda result: None))
    request = {"path": path, "task": task, "allow_unsafe_ops": allow_unsafe_ops,
               "skip": list(skip)}
    start = time.monotonic()
    process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               start_new_session=True)  # Its own group, to kill it whole.
    try:
        _send_request(process, request)
        stopped = _watch(process, limits, start, seen)
    finally:
        _kill(process)
    if seen.report is not None:
        return dataclasses.replace(seen.report, seconds=time.monotonic() - start)
    stop = stopped or _death(process.returncode)
    return seen.partial(path, stop, skip, time.monotonic() - start)


def _send_request(process, request):
    try:
        process.stdin.write((json.dumps(request) + "\n").encode())
        process.stdin.close()
    except BrokenPipeError:  # It died at once: reported as its death.
        pass


class _Progress:
    """What the child reported so far: the finished checks, then its report."""

    def __init__(self, on_result):
        self.on_result = on_result
        self.results, self.report, self.since = [], None, time.monotonic()
        self.task, self.task_source = None, "as the model was stopped before its first check"

    def receive(self, message):
        if "started" in message:
            self.since = time.monotonic()
            if message.get("task_source"):
                self.task, self.task_source = message["task"], message["task_source"]
        elif "result" in message:
            self.results.append(_result_from_json(message["result"]))
            self.on_result(self.results[-1])
        elif "report" in message:
            self.report = reports.from_json(message["report"])

    def partial(self, path, stop, skip, seconds):
        """The ModelReport of a child stopped for `stop`, a _Stop.

        The checks run in order, so the one running is the first not finished.
        """
        entries = checker.all_checks()[len(self.results):]
        if entries:
            running = _stopped(entries[0].name, entries[0].clause, stop,
                               time.monotonic() - self.since)
            self.on_result(running)
        else:  # Stopped after its last check, before its report: that check fails.
            last = self.results.pop()
            running = _stopped(last.check, last.clause, stop, last.seconds, last.findings)
        rest = [checker._skipped(e) if e.name in skip else _not_run(e, stop, running.check)
                for e in entries[1:]]
        return reports.ModelReport(path, self.task, self.task_source,
                                   (*self.results, running, *rest), seconds)


def _stopped(name, clause, stop, seconds, findings=()):
    """The CheckResult of the check that was running when the child was stopped."""
    error = reports.Finding(name, clause, "error", f"stopped: {stop.reason}{stop.detail}",
                            stop.hint)
    return reports.CheckResult(name, clause, (*findings, error), seconds)


def _not_run(entry, stop, running):
    finding = reports.Finding(entry.name, entry.clause, "skipped",
                              f"not run: {stop.reason} during {running}")
    return reports.CheckResult(entry.name, entry.clause, (finding,), 0.0)


def _watch(process, limits, start, seen):
    """Passes each message of the child to `seen` until its report or the
    end of its output (then the caller kills it: nothing is left to wait for).

    Returns None, or the _Stop naming the limit it broke.
    """
    stdout, pending = process.stdout.fileno(), b""
    while True:
        if select.select([stdout], [], [], POLL_S)[0]:
            chunk = os.read(stdout, 1 << 16)
            if not chunk:
                return None
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                seen.receive(json.loads(line))
            if seen.report is not None:
                return None
        broken = _broken(process.pid, limits, start)
        if broken:
            return broken


def _broken(pid, limits, start):
    """The _Stop for the limit the child broke, or None."""
    if time.monotonic() - start > limits.seconds:
        return _Stop(f"the model exceeded the time limit of {limits.seconds:g} s (--timeout_s)",
                     "a call that never ends (e.g. a While loop whose condition stays true) "
                     "cannot be used; if the model is only slow, raise --timeout_s")
    resident = worker._memory("VmRSS", f"/proc/{pid}/status")
    if resident > limits.memory_bytes:
        return _Stop(f"the model used more than {limits.memory_bytes / 1e9:.1f} GB of memory "
                     "(--memory_gb)", "if the model really needs this much, raise --memory_gb",
                     f"; {resident / 1e9:.2f} GB resident when stopped")
    return None


def _death(code):
    """The _Stop for a child that ended before its report."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        cause = (" (the kernel's out-of-memory killer sends it)"
                 if -code == signal.SIGKILL else "")
        return _Stop(f"the check process was killed by signal {name}{cause}",
                     "run hubexport.checker.check() in Python to see where it stops")
    return _Stop(f"the check process ended with exit status {code} before its report",
                 "its error is on stderr above")


def _kill(process):
    """SIGKILL to the child's process group (a no-op once it is gone); reaps it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    process.stdout.close()


def _result_from_json(result):
    findings = tuple(reports.Finding(**f) for f in result["findings"])
    return reports.CheckResult(**{**result, "findings": findings})


def progress(log):
    """An on_result that logs "[i/n] CLAUSE name: status (seconds)" per check."""
    total, done = len(checker.all_checks()), []

    def show(result):
        done.append(result)
        log(f"[{len(done)}/{total}] {result.clause} {result.check}: {result.status} "
            f"({result.seconds:.1f}s)")

    return show


# The child.


def _child():
    """Reads one request on stdin; runs checker.check, announcing every check
    as it starts and ends."""
    worker._stop_with_parent()
    channel = worker._answer_channel()

    def send(message):
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    from hubexport import cli

    cli.quiet_tensorflow()
    request = json.loads(sys.stdin.readline())
    report = checker.check(
        request["path"], request["task"], request["allow_unsafe_ops"],
        skip=tuple(request["skip"]),
        on_start=lambda entry, context: send({"started": entry.name, "task": context.task,
                                              "task_source": context.task_source}),
        on_result=lambda result: send({"result": dataclasses.asdict(result)}))
    send({"report": reports.to_json([report])["models"][0]})


if __name__ == "__main__":
    _child()
