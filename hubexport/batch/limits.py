"""A model's work within a time and a memory limit; `hubexport check` of one model.

    report = limits.check("/tmp/m", limits=limits.Limits(600, 8e9), on_result=print)

A SavedModel is a program, and the F2 scan only proves that it touches
nothing outside itself: its `__call__` may still loop forever (a While loop
whose condition stays true is plain math), block on a queue, or allocate
100 GB. Checked in the CLI's own process, such a model hangs the CI job or
has the kernel's OOM killer end it. So every model is checked (and exported)
in a worker process (`python -m hubexport.batch.worker`), which runs the same
checker.check (the F2 scan still comes before any load) and writes one JSON
line as each check starts and ends. Its parent passes each finished
CheckResult on as it arrives, and stops the worker's whole process group
with SIGKILL once the wall clock since the job started passes
`Limits.seconds` or the resident memory of the worker and its children
(VmRSS, polled from /proc every POLL_S) passes `Limits.memory_bytes`. Not
RLIMIT_AS: TensorFlow reserves far more virtual address space than it
touches and fails under it.

A worker that answered and stayed small (SPARE_BYTES, and half the next
limit) is kept for the next model this process checks, as a batch worker
is: the next check starts without a TensorFlow start-up.

The report stays whole: the checks that ended keep their findings, the one
that was running gets an error naming the limit, and the ones after it are
skipped ("not run: ..."). A worker that dies on its own (a crash, the OOM
killer) is reported the same way, naming the signal.

`check` here is `hubexport check` of one model at a time;
hubexport.batch.scheduler (export_all, check --jobs=N) applies the same
Limits to each of its jobs with the pieces below: broken(), Progress, death()
and kill().
"""

import atexit
import dataclasses
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

from hubexport import reports
from hubexport.batch import memory
from hubexport.errors import UserError

# The longest check of a catalog model at full size took about 200 s
# (BUILD_NOTES.md: ResNetRS420 at 320x320, export and check 205 s;
# EfficientNetB7 at 600x600, check 85 s; EfficientNetV2L at 32x32, 181 s), up to
# 1.9x slower on a slow day and 1.4x beside another model: about 530 s. The
# default leaves more than 3x on top of that.
DEFAULT_TIMEOUT_S = 1800
# export_all, per model: its export and its check. The slowest full-size
# catalog model, ResNetRS420 at 320x320, took 205 s for both alone (4 minutes
# beside another model in CI); EfficientNetB7 at 600x600 60-70 s to export
# and 85 s to check. At 1.9x for a slow day and 1.4x beside another model
# that is about 550 s: an hour leaves more than 6x on top of it, and 12x on
# the catalog CI tier's largest model (about 5 minutes at its smallest size,
# --jobs=2), while a model that never ends costs at most an hour of a run.
EXPORT_TIMEOUT_S = 3600
# Of the machine's RAM (MemTotal) a model may use by default: the rest is for
# this process (TensorFlow imported: under 1 GB), the system, and what the
# child can allocate between two polls. The catalog's largest peak, export and
# check together, is 16.1 GB: 64% of the 25.3 GB (MemTotal) of the machine it ran on.
MEMORY_SHARE = 0.8
POLL_S = 0.1
# How a worker process is started (hubexport.batch.worker; tests use stand-ins).
WORKER = (sys.executable, "-m", "hubexport.batch.worker")
# A worker that answered its check and stayed under this much resident memory
# (and under half the next check's limit) checks the next model of this
# process: a TensorFlow start-up (3-5 s) saved per model after the first.
SPARE_BYTES = 3 * memory.GIB


@dataclasses.dataclass(frozen=True)
class Limits:
    seconds: float  # Wall clock per model, from the start of its job.
    memory_bytes: float  # Resident memory of its worker and children; math.inf for none.


@dataclasses.dataclass(frozen=True)
class Stop:
    """Why a job was stopped or ended early: said by every check it cut off."""

    reason: str  # "the model exceeded the time limit of 600 s (--timeout_s)"
    hint: str
    detail: str = ""  # Only in the running check's error.


def default_memory_bytes():
    """MEMORY_SHARE of MemTotal (/proc/meminfo); no limit where it cannot be read."""
    total = memory.total()
    return MEMORY_SHARE * total if total else math.inf


def default_limits(seconds=DEFAULT_TIMEOUT_S):
    return Limits(seconds, default_memory_bytes())


def requested(timeout_s, memory_gb, default_seconds):
    """The Limits per model for --timeout_s (None: `default_seconds`) and --memory_gb
    (None: default_memory_bytes()); a value that is no limit (0, nan, inf) is refused."""
    examples = {"timeout_s": 3600, "memory_gb": 16}
    for name, value in (("timeout_s", timeout_s), ("memory_gb", memory_gb)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(
                f"--{name}={value:g} is no limit; allowed: a finite number above 0, "
                f"e.g. --{name}={examples[name]} (leave it out for the default)")
    return Limits(default_seconds if timeout_s is None else timeout_s,
                  default_memory_bytes() if memory_gb is None else int(memory_gb * 1e9))


def check(path, task="auto", allow_unsafe_ops=False, skip=(), limits=None,
          on_result=None, command=WORKER):
    """checker.check(path, task, allow_unsafe_ops, skip=skip) in a worker; a ModelReport.

    limits: a Limits (default: default_limits()).
    on_result(CheckResult): called in this process as each check ends, in order.
    command: how to start the worker (tests use stand-ins).
    """
    limits = limits or default_limits()
    seen = Progress(on_result)
    job = {"check": path, "task": task, "allow_unsafe_ops": allow_unsafe_ops,
           "skip_checks": list(skip)}
    start = time.monotonic()
    worker = _Spare.take(tuple(command), limits) or _Spare.start(tuple(command))
    stopped = None
    try:
        _send_request(worker.process, job)
        stopped = _watch(worker.process, limits, start, seen, worker.lines)
    finally:
        if stopped or not (seen.answer or {}).get("report") or not worker.keep():
            worker.close()
    answer = seen.answer or {}
    if answer.get("report"):
        return dataclasses.replace(reports.from_json(answer["report"]),
                                   seconds=time.monotonic() - start)
    stop = stopped or _failure(answer) or death(worker.process.returncode, "the check process")
    return seen.partial(path, stop, skip, time.monotonic() - start)


class _Spare:
    """A started worker, and the one kept between checks (the spare)."""

    kept = None

    def __init__(self, command, process):
        self.command, self.process = command, process
        self.lines = Lines(process.stdout.fileno())

    @classmethod
    def start(cls, command):
        return cls(command, subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True))  # Its own group, to kill it whole.

    @classmethod
    def take(cls, command, limits):
        """The spare, if it was started with `command` and is alive and small enough
        for `limits`; else None (and a spare that is not is stopped)."""
        spare, cls.kept = cls.kept, None
        if spare is None:
            return None
        if (spare.command == command and spare.process.poll() is None
                and memory.resident(spare.process.pid) < min(SPARE_BYTES,
                                                             limits.memory_bytes / 2)):
            return spare
        spare.close()
        return None

    def keep(self):
        """Keeps this worker as the spare (stopping the one before); False if it died."""
        if self.process.poll() is not None:
            return False
        _Spare.close_kept()
        _Spare.kept = self
        return True

    def close(self):
        kill(self.process)
        self.process.stdout.close()
        if self.process.stdin:
            self.process.stdin.close()

    @classmethod
    def close_kept(cls):
        spare, cls.kept = cls.kept, None
        if spare is not None:
            spare.close()


atexit.register(_Spare.close_kept)


def _send_request(process, job):
    """Writes the job; stdin stays open for the next one (a spare worker)."""
    try:
        process.stdin.write((json.dumps(job) + "\n").encode())
        process.stdin.flush()
    except BrokenPipeError:  # It died at once: reported as its death.
        pass


def _watch(process, limits, start, seen, lines=None):
    """Passes each message of the worker to `seen` until its answer or the
    end of its output (then the caller kills it: nothing is left to wait for).

    Returns None, or the Stop naming the limit it broke.
    """
    lines = lines or Lines(process.stdout.fileno())
    while True:
        if select.select([lines.fd], [], [], POLL_S)[0]:
            messages = lines.read()
            if messages is None:
                return None
            for message in messages:
                seen.receive(message)
            if seen.answer is not None:
                return None
        stop = broken(process.pid, limits, start)
        if stop:
            return stop


class Lines:
    """The JSON messages a worker writes to a pipe, one per line, as they come."""

    def __init__(self, fd):
        self.fd, self.pending = fd, b""

    def read(self):
        """The messages completed by what can be read now; None at the end of the output."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        return [json.loads(line) for line in lines]


class Progress:
    """What a worker reported of its job so far: the checks that ended, then its answer.

    first: what the job does before its first check ("export"), or None.
    """

    def __init__(self, on_result=None, first=None):
        self.on_result = on_result or (lambda result: None)
        self.first, self.checking = first, False
        self.results, self.answer, self.since = [], None, time.monotonic()
        self.task, self.task_source = None, "as the model was stopped before its first check"

    def receive(self, message):
        if "started" in message:
            self.checking, self.since = True, time.monotonic()
            if message.get("task_source"):
                self.task, self.task_source = message["task"], message["task_source"]
        elif "result" in message:
            self.results.append(_result_from_json(message["result"]))
            self.on_result(self.results[-1])
        else:
            self.answer = message

    @property
    def running(self):
        """What the job was doing: `first` until a check started, then that check
        (the checks run in order: the first not finished, or the last)."""
        if self.first and not self.checking:
            return self.first
        entries = _checks()
        return entries[min(len(self.results), len(entries) - 1)].name

    def partial(self, path, stop, skip, seconds):
        """The ModelReport of a job stopped for `stop`, a Stop, during its checks."""
        entries = _checks()[len(self.results):]
        if entries:
            running = _stopped(entries[0].name, entries[0].clause, stop,
                               time.monotonic() - self.since)
            self.on_result(running)
        else:  # Stopped after its last check, before its report: that check fails.
            last = self.results.pop()
            running = _stopped(last.check, last.clause, stop, last.seconds, last.findings)
        rest = [_skipped(e) if e.name in skip else _not_run(e, stop, running.check)
                for e in entries[1:]]
        return reports.ModelReport(path, self.task, self.task_source,
                                   (*self.results, running, *rest), seconds)


def _stopped(name, clause, stop, seconds, findings=()):
    """The CheckResult of the check that was running when the job was stopped."""
    error = reports.Finding(name, clause, "error", f"stopped: {stop.reason}{stop.detail}",
                            stop.hint)
    return reports.CheckResult(name, clause, (*findings, error), seconds)


def _not_run(entry, stop, running):
    finding = reports.Finding(entry.name, entry.clause, "skipped",
                              f"not run: {stop.reason} during {running}")
    return reports.CheckResult(entry.name, entry.clause, (finding,), 0.0)


def _skipped(entry):
    """What checker.check reports for a check in its `skip`."""
    finding = reports.Finding(entry.name, entry.clause, "skipped", "not run: --skip_checks")
    return reports.CheckResult(entry.name, entry.clause, (finding,), 0.0)


def broken(pid, limits, start):
    """The Stop for the limit that the process `pid` (and its children) broke, or None.

    start: time.monotonic() when its job started.
    """
    if time.monotonic() - start > limits.seconds:
        return Stop(f"the model exceeded the time limit of {limits.seconds:g} s (--timeout_s)",
                    "a call that never ends (e.g. a While loop whose condition stays true) "
                    "cannot be used; if the model is only slow, raise --timeout_s")
    if limits.memory_bytes == math.inf:
        return None
    resident = memory.resident(pid)
    if resident > limits.memory_bytes:
        return Stop(f"the model used more than {limits.memory_bytes / 1e9:.1f} GB of memory "
                    "(--memory_gb)", "if the model really needs this much, raise --memory_gb",
                    f"; {resident / 1e9:.2f} GB resident when stopped")
    return None


def death(code, process="the check process"):
    """The Stop for a worker that ended (exit status `code`) before its answer."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        cause = (" (the kernel's out-of-memory killer sends it)"
                 if -code == signal.SIGKILL else "")
        return Stop(f"{process} was killed by signal {name}{cause}",
                    "run hubexport.checker.check() in Python to see where it stops")
    return Stop(f"{process} ended with exit status {code} before its report",
                "its error is on stderr above")


def _failure(answer):
    """The Stop for a check job that the worker answered with an error (no report)."""
    if "error" not in answer:
        return None
    return Stop(f"the check failed: {answer['error']}",
                "run hubexport.checker.check() in Python to see the traceback")


def kill(process):
    """SIGKILL to the process group of `process` (a no-op once it is gone); reaps it.

    Only before it is reaped: its pid (the group's id) is not reused until then.
    """
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _checks():
    """hubexport.check.CHECKS, the checks in the order they run (importing TensorFlow)."""
    from hubexport import check

    return check.CHECKS


def _result_from_json(result):
    findings = tuple(reports.Finding(**f) for f in result["findings"])
    return reports.CheckResult(**{**result, "findings": findings})


def progress(log):
    """An on_result that logs "[i/n] CLAUSE name: status (seconds)" per check."""
    total, done = len(_checks()), []

    def show(result):
        done.append(result)
        log(f"[{len(done)}/{total}] {result.clause} {result.check}: {result.status} "
            f"({result.seconds:.1f}s)")

    return show
