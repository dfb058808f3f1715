"""Runs many exports or checks in worker processes, as many at once as asked.

    outcomes = scheduler.run(jobs, parallel=2, log=print)

Each worker is a Python process with its own TensorFlow runtime
(`python -m hubexport.batch.worker`) taking one job at a time. A long-lived
TensorFlow process keeps memory that a freed model used (a catalog process
grew past 11 GiB after 13 models), so a worker whose resident memory grew
past RECYCLE_BYTES is replaced after its job; small models share a worker and
do not pay for importing TensorFlow each time.

Scheduling is memory-aware and longest-first: jobs start in order of their
estimated cost, largest first (so no large model is left to run alone at the
end), and a job starts only while the memory estimates of the running jobs
and its own fit in the budget (the memory available when the run started,
less a reserve); a job larger than the whole budget runs alone. When the
largest waiting job does not fit yet, it is next: a smaller job starts
beside the running ones only if it is expected to end before the largest
can start (backfilling), so a stream of small jobs cannot keep pushing it
back until it runs alone at the end. After each
job a progress line gives the elapsed time and an estimate of what remains
(the estimated costs of the remaining jobs, scaled by how long the finished
ones really took).

With limits (hubexport.batch.limits.Limits: --timeout_s, --memory_gb), a job
that runs past its time or whose worker's resident memory passes its memory
is stopped: its worker's whole process group is killed, the job fails with
an error naming what was running (the export, or the check: each worker
reports its checks as they start and end, so those that ended keep their
findings and the rest are "not run"), and a fresh worker takes the next job.

Ctrl-C or SIGTERM stops the workers; an export that was running removes its
staging directory, and `run` raises KeyboardInterrupt after recording nothing
for unfinished jobs.
"""

import dataclasses
import json
import os
import selectors
import signal
import subprocess
import time

from hubexport import reports
from hubexport.batch import limits as limits_lib
from hubexport.batch import memory
from hubexport.batch.limits import WORKER

GIB = memory.GIB
WORKER_BYTES = 0.75 * GIB  # A worker with TensorFlow imported, before any job.
RECYCLE_BYTES = 3 * GIB
RESERVE_BYTES = GIB // 2


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    request: dict  # The worker's job (see hubexport.batch.worker).
    memory: int  # Estimated peak bytes.
    cost: float  # Estimated seconds.


@dataclasses.dataclass(frozen=True)
class Outcome:
    job: Job
    answer: dict  # The worker's answer, or {"ok": False, "error": ...}.
    seconds: float


def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Worker:
    """One `python -m hubexport.batch.worker` process and the job it is running."""

    def __init__(self, log_file, command):
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            start_new_session=True,  # Its own process group, to kill it whole.
        )
        self.lines = limits_lib.Lines(self.process.stdout.fileno())
        self.job = self.started = self.seen = None
        self.ended = False  # Its output ended, or it was killed.
        self.rss = 0
        self.charge = 0  # The memory counted for the running job.

    def start(self, job):
        # A worker that kept memory from earlier jobs needs that much more.
        self.charge = job.memory + max(0, self.rss - WORKER_BYTES)
        self.job, self.started = job, time.monotonic()
        first = "export" if job.request.get("export") is not None else None
        self.seen = limits_lib.Progress(first=first)
        try:
            self.process.stdin.write((json.dumps(job.request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:  # It just died: read() reports its death.
            pass

    def read(self):
        """Takes what the worker wrote: the Outcome once its job is answered or the
        worker ended (an error answer), else None."""
        messages = self.lines.read()
        if messages is None:
            self.ended = True
            limits_lib.kill(self.process)  # What its children left; reaps it.
            if self.job is None:
                return None
            return self._end(limits_lib.death(self.process.returncode, "the worker process"))
        for message in messages:
            self.seen.receive(message)
        if self.seen.answer is None:
            return None
        self.rss = self.seen.answer.get("rss_bytes", 0)
        return self._end()

    def enforce(self, limits):
        """The Outcome of a job past `limits` (its worker's process group killed), or None."""
        stop = limits_lib.broken(self.process.pid, limits, self.started)
        if stop is None:
            return None
        self.ended = True
        limits_lib.kill(self.process)
        return self._end(stop)

    def _end(self, stop=None):
        seconds = time.monotonic() - self.started
        answer = (self.seen.answer if stop is None
                  else _cut_short(self.job.request, self.seen, stop, seconds))
        outcome = Outcome(self.job, answer, seconds)
        self.job = self.seen = None
        return outcome

    @property
    def alive(self):
        return not self.ended and self.process.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.alive:
            self.process.send_signal(sig)

    def close(self):
        try:
            self.process.stdin.close()
        except OSError:  # It is gone: nothing to flush.
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            limits_lib.kill(self.process)
        self.process.stdout.close()


def _cut_short(request, seen, stop, seconds):
    """The answer to a job whose worker was stopped or died: an error naming what
    was running, and the partial report of its checks if they had started (the
    checks that ended keep their findings, the rest are "not run")."""
    answer = {"ok": False,
              "error": f"stopped during {seen.running}: {stop.reason}{stop.detail}"}
    if seen.first and not seen.checking:
        return answer
    checked = request["check"] if isinstance(request.get("check"), str) else request["output"]
    report = seen.partial(checked, stop, request.get("skip_checks", ()), seconds)
    strict = request.get("strict", False)
    return {**answer, "report": reports.to_json([report], strict)["models"][0],
            "text": reports.text([report], strict)}


def run(jobs, parallel=1, log=lambda message: None, on_outcome=lambda outcome: None,
        memory_budget=None, worker_log=os.devnull, worker_command=WORKER, limits=None):
    """Runs `jobs` in up to `parallel` workers; returns their Outcomes in job order.

    on_outcome(outcome) is called as each job ends (to record it at once).
    memory_budget: bytes the running jobs may use together (default: the
    memory available now, less RESERVE_BYTES).
    worker_command: how to start a worker process (see hubexport.batch.worker).
    limits: a limits_lib.Limits for every job, or None for none. A job past
    its time, or whose worker's resident memory (with its children) passes
    its memory, has its worker's process group killed and fails with an
    error naming what was running ("export" or the check); the checks that
    ended keep their findings. A fresh worker takes the next job.
    """
    if memory_budget is None:
        available = memory.available()
        memory_budget = (available - RESERVE_BYTES) if available else float("inf")
    waiting = sorted(jobs, key=lambda j: -j.cost)
    total_cost = sum(j.cost for j in jobs) or 1.0
    outcomes = {}
    workers = []
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    done_cost = done_seconds = 0.0
    with open(worker_log, "a") as log_file:
        try:
            while waiting or any(w.job for w in workers):
                pace = done_seconds / done_cost if done_cost else 1.0
                _start_jobs(waiting, workers, selector, parallel, memory_budget,
                            lambda: _Worker(log_file, list(worker_command)), pace)
                for worker, outcome in _ended(selector, workers, limits):
                    if not worker.alive or worker.rss > RECYCLE_BYTES:
                        selector.unregister(worker.lines.fd)
                        worker.close()
                        workers.remove(worker)
                    if outcome is None:  # An idle worker that died.
                        continue
                    outcomes[outcome.job.name] = outcome
                    done_cost += outcome.job.cost
                    done_seconds += outcome.seconds
                    on_outcome(outcome)
                    elapsed = time.monotonic() - start
                    remaining = (total_cost - done_cost) * done_seconds / max(done_cost, 1e-9)
                    log(_progress(len(outcomes), len(jobs), outcome, elapsed,
                                  remaining / max(1, min(parallel, len(jobs) - len(outcomes)))))
        finally:
            interrupted = any(w.job for w in workers)
            for worker in workers:
                if worker.job:
                    worker.stop()
            for worker in workers:
                worker.close()
            selector.close()
            if interrupted:
                log("stopped: the running jobs were interrupted")
    return [outcomes[j.name] for j in jobs]


def _ended(selector, workers, limits):
    """(worker, Outcome) of each job that ended, and (worker, None) of each idle
    worker that did; waits for one (with limits, up to limits_lib.POLL_S: the
    running jobs are measured against them as often)."""
    ended = []
    for key, _ in selector.select(limits_lib.POLL_S if limits else None):
        outcome = key.data.read()
        if outcome or key.data.ended:
            ended.append((key.data, outcome))
    for worker in workers if limits else ():
        outcome = worker.enforce(limits) if worker.job else None
        if outcome:
            ended.append((worker, outcome))
    return ended


def _start_jobs(waiting, workers, selector, parallel, budget, new_worker, pace=1.0):
    """Starts the waiting jobs that fit, largest first, backfilling (see above).

    pace: seconds a job takes per second of its estimated cost, so far.
    """
    while waiting:
        running = [w for w in workers if w.job]
        if len(running) >= parallel:
            return
        used = sum(w.charge for w in running)
        job = waiting[0]
        if running and used + job.memory > budget:
            job = _backfill(waiting, running, used, budget, pace)
            if job is None:
                return
        waiting.remove(job)
        idle = next((w for w in workers if not w.job), None)
        if idle is None:
            idle = new_worker()
            workers.append(idle)
            selector.register(idle.lines.fd, selectors.EVENT_READ, idle)
        idle.start(job)


def _backfill(waiting, running, used, budget, pace):
    """A waiting job that fits now and ends before waiting[0] can start, or None.

    waiting[0] can start once enough of the running jobs have ended (by their
    estimates; a job past its estimate is expected to end now); a job larger
    than the whole budget, once they all have.
    """
    now = time.monotonic()
    ends = sorted((max(now, w.started + w.job.cost * pace), w.charge) for w in running)
    left = used
    for ready, charge in ends:
        left -= charge
        if left + waiting[0].memory <= budget:
            break
    return next((j for j in waiting[1:]
                 if used + j.memory <= budget and now + j.cost * pace <= ready), None)


def _progress(count, total, outcome, elapsed, remaining):
    answer = outcome.answer
    if not answer.get("ok"):
        what = f"FAILED: {answer.get('error')}"
    elif "report" in answer:
        what = answer["report"]["verdict"].upper()
    else:
        what = "done"
    estimate = f", about {duration(remaining)} left" if count < total else ""
    return (f"[{count}/{total}] {outcome.job.name}: {what} in {duration(outcome.seconds)} "
            f"(elapsed {duration(elapsed)}{estimate})")
