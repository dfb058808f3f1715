"""Runs many exports or checks in worker processes, as many at once as asked.

    outcomes = runner.run(jobs, parallel=2, log=print)

Each worker is a Python process with its own TensorFlow runtime
(`python -m hubexport.worker`) taking one job at a time. A long-lived
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
import sys
import time

GIB = 2**30
WORKER_BYTES = 0.75 * GIB  # A worker with TensorFlow imported, before any job.
RECYCLE_BYTES = 3 * GIB
RESERVE_BYTES = GIB // 2


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    request: dict  # The worker's job (see hubexport.worker).
    memory: int  # Estimated peak bytes.
    cost: float  # Estimated seconds.


@dataclasses.dataclass(frozen=True)
class Outcome:
    job: Job
    answer: dict  # The worker's answer, or {"ok": False, "error": ...}.
    seconds: float


def available_memory():
    """MemAvailable from /proc/meminfo in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Worker:
    """One `python -m hubexport.worker` process and the job it is running."""

    def __init__(self, log_file, command):
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        self.job = None
        self.started = None
        self.rss = 0
        self.charge = 0  # The memory counted for the running job.

    def start(self, job):
        # A worker that kept memory from earlier jobs needs that much more.
        self.charge = job.memory + max(0, self.rss - WORKER_BYTES)
        self.job, self.started = job, time.monotonic()
        self.process.stdin.write(json.dumps(job.request) + "\n")
        self.process.stdin.flush()

    def finish(self):
        """The answer to the running job (the worker ended: an error answer)."""
        line = self.process.stdout.readline()
        seconds = time.monotonic() - self.started
        if line:
            answer = json.loads(line)
            self.rss = answer.get("rss_bytes", 0)
        else:
            code = self.process.wait()
            reason = (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
            answer = {"ok": False, "error": f"the worker process ended ({reason}; "
                      "out of memory?)"}
        outcome = Outcome(self.job, answer, seconds)
        self.job = None
        return outcome

    @property
    def alive(self):
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.alive:
            self.process.send_signal(sig)

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


WORKER = (sys.executable, "-m", "hubexport.worker")


def run(jobs, parallel=1, log=lambda message: None, on_outcome=lambda outcome: None,
        memory_budget=None, worker_log=os.devnull, worker_command=WORKER):
    """Runs `jobs` in up to `parallel` workers; returns their Outcomes in job order.

    on_outcome(outcome) is called as each job ends (to record it at once).
    memory_budget: bytes the running jobs may use together (default: the
    memory available now, less RESERVE_BYTES).
    worker_command: how to start a worker process (see hubexport.worker).
    """
    if memory_budget is None:
        available = available_memory()
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
                for key, _ in selector.select():
                    worker = key.data
                    outcome = worker.finish()
                    outcomes[outcome.job.name] = outcome
                    if not worker.alive or worker.rss > RECYCLE_BYTES:
                        selector.unregister(worker.process.stdout)
                        worker.close()
                        workers.remove(worker)
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
            selector.register(idle.process.stdout, selectors.EVENT_READ, idle)
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
