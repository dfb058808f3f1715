"""The scheduler of export_all and check --jobs, with a stand-in worker.

The stand-in speaks the worker's protocol without TensorFlow: it reports the
job's "checks" as started and passed, starts its "running" check, sleeps for
the job's "sleep" seconds (with "allocate", beside a child process holding
that many bytes), appends "start/end NAME PID TIME" to a log, and answers
with the job's "rss" as its memory. So these tests see exactly when each job
ran, in which process, and what was kept of a job stopped at its limits, in
a fraction of a second each (a limit: 1 s).
"""

import json
import math
import os
import sys

import pytest
from test_isolation import _gone

from hubexport import atomic, catalog, checker, reports
from hubexport.batch import limits as limits_lib
from hubexport.batch import memory, scheduler
from hubexport.errors import UserError

GIB = scheduler.GIB
ONE_SECOND = limits_lib.Limits(1, math.inf)

_FAKE_WORKER = """
import json, os, subprocess, sys, time
log = sys.argv[1]
def send(message):
    print(json.dumps(message), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    with open(log, "a") as f:
        f.write(f"start {job['name']} {os.getpid()} {time.monotonic()}\\n")
    if job.get("die"):
        sys.exit(3)
    for name in job.get("checks", ()):
        send({"started": name, "task": "feature_vector", "task_source": "as requested"})
        send({"result": {"check": name, "clause": "F1", "findings": [], "seconds": 0.1}})
    if job.get("running"):
        send({"started": job["running"]})
    if job.get("allocate"):
        child = subprocess.Popen([sys.executable, "-c", "import time; kept = b'1' * %d; "
                                  "time.sleep(1000)" % job["allocate"]])
        open(job["child_pid"], "w").write(str(child.pid))
    time.sleep(job.get("sleep", 0.2))
    with open(log, "a") as f:
        f.write(f"end {job['name']} {os.getpid()} {time.monotonic()}\\n")
    send({"ok": True, "rss_bytes": job.get("rss", 0), "peak_bytes": 1})
"""


def _run(tmp_path, jobs, **kwargs):
    log = tmp_path / "events.log"
    messages = []
    outcomes = scheduler.run(jobs, log=messages.append,
                          worker_command=(sys.executable, "-c", _FAKE_WORKER, str(log)), **kwargs)
    events = [line.split() for line in log.read_text().splitlines()]
    return outcomes, events, messages


def _job(name, memory=GIB, cost=1.0, **request):
    """An export job (its "export" runs until its first check starts)."""
    return scheduler.Job(name, {"name": name, "export": {}, "output": name, **request}, memory,
                      cost)


def _intervals(events):
    spans = {}
    for kind, name, pid, when in events:
        spans.setdefault(name, {})[kind] = float(when)
        spans[name]["pid"] = pid
    return spans


def _overlap(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_jobs_run_side_by_side_largest_first(tmp_path):
    jobs = [_job("small", cost=1), _job("large", cost=9), _job("medium", cost=5)]
    outcomes, events, messages = _run(tmp_path, jobs, parallel=2, memory_budget=10 * GIB)
    assert [o.job.name for o in outcomes] == ["small", "large", "medium"]  # Job order.
    assert all(o.answer["ok"] for o in outcomes)
    starts = [name for kind, name, _, _ in events if kind == "start"]
    assert set(starts[:2]) == {"large", "medium"} and starts[2] == "small"
    spans = _intervals(events)
    assert _overlap(spans["large"], spans["medium"])
    assert len(messages) == 3 and messages[-1].startswith("[3/3] ")
    assert "about" in messages[0] and "left" in messages[0]


def test_jobs_wait_for_memory(tmp_path):
    jobs = [_job("a", memory=6 * GIB), _job("b", memory=6 * GIB), _job("c", memory=3 * GIB)]
    _, events, _ = _run(tmp_path, jobs, parallel=2, memory_budget=10 * GIB)
    spans = _intervals(events)
    assert not _overlap(spans["a"], spans["b"])  # 12 GiB together: over budget.
    assert _overlap(spans["a"], spans["c"]) or _overlap(spans["b"], spans["c"])


def test_a_job_larger_than_the_budget_runs_alone(tmp_path):
    jobs = [_job("huge", memory=50 * GIB, cost=9), _job("tiny", cost=1)]
    outcomes, events, _ = _run(tmp_path, jobs, parallel=2, memory_budget=10 * GIB)
    spans = _intervals(events)
    assert not _overlap(spans["huge"], spans["tiny"])
    assert all(o.answer["ok"] for o in outcomes)


def test_small_jobs_do_not_keep_a_large_one_waiting(tmp_path):
    # "large" (7 GiB) fits beside neither "first" nor a medium (5 GiB each)
    # in 10 GiB. Mediums may start beside "first" while they are expected to
    # end before it does; after that, "large" is next, not the mediums that
    # would fit beside each other (before backfilling it started last, alone).
    # Each job sleeps a tenth of its cost, so the scheduler's pace is right.
    mediums = [f"m{i}" for i in range(12)]
    jobs = [_job("first", memory=5 * GIB, cost=10, sleep=1.0),
            _job("large", memory=7 * GIB, cost=9, sleep=0.9)]
    jobs += [_job(name, memory=5 * GIB, cost=2, sleep=0.2) for name in mediums]
    outcomes, events, _ = _run(tmp_path, jobs, parallel=2, memory_budget=10 * GIB)
    assert all(o.answer["ok"] for o in outcomes)
    spans = _intervals(events)
    assert any(_overlap(spans["first"], spans[m]) for m in mediums)  # Backfilled.
    assert not any(_overlap(spans["large"], spans[m]) for m in mediums + ["first"])
    after = [m for m in mediums if spans[m]["start"] > spans["large"]["start"]]
    assert len(after) >= 4, after


def test_a_worker_that_grew_is_replaced(tmp_path):
    jobs = [_job("grew", cost=3, rss=scheduler.RECYCLE_BYTES + 1), _job("next", cost=2),
            _job("same", cost=1)]
    _, events, _ = _run(tmp_path, jobs, parallel=1)
    spans = _intervals(events)
    assert spans["grew"]["pid"] != spans["next"]["pid"]
    assert spans["next"]["pid"] == spans["same"]["pid"]  # Small ones share a worker.


def test_a_dead_worker_fails_its_job_only(tmp_path):
    jobs = [_job("dies", cost=2, die=True), _job("fine", cost=1)]
    outcomes, _, messages = _run(tmp_path, jobs, parallel=1)
    dead, fine = outcomes
    assert dead.answer == {"ok": False, "error": "stopped during export: the worker process "
                                                 "ended with exit status 3 before its report"}
    assert fine.answer["ok"]
    assert any("dies: FAILED: stopped during export: the worker process ended" in m
               for m in messages)


def test_a_job_past_its_time_limit_is_killed_and_the_run_goes_on(tmp_path):
    jobs = [_job("hangs", cost=2, sleep=60), _job("fine", cost=1)]
    outcomes, events, messages = _run(tmp_path, jobs, parallel=1, limits=ONE_SECOND)
    hangs, fine = outcomes
    assert hangs.answer == {"ok": False, "error": "stopped during export: the model exceeded "
                                                  "the time limit of 1 s (--timeout_s)"}
    assert fine.answer["ok"]
    spans = _intervals(events)
    assert "end" not in spans["hangs"] and _gone(int(spans["hangs"]["pid"]))
    assert spans["fine"]["pid"] != spans["hangs"]["pid"]  # A fresh worker.
    assert any("hangs: FAILED: stopped during export: the model exceeded" in m for m in messages)


def test_a_worker_past_its_memory_limit_is_killed_with_its_children(tmp_path):
    # The worker is small; the child it started holds 400 MB.
    child = tmp_path / "child.pid"
    jobs = [_job("grows", sleep=60, allocate=400 * 10**6, child_pid=str(child)),
            _job("fine", cost=0.5)]
    outcomes, _, _ = _run(tmp_path, jobs, limits=limits_lib.Limits(30, 0.2e9))
    error = outcomes[0].answer["error"]
    assert error.startswith("stopped during export: the model used more than 0.2 GB of "
                            "memory (--memory_gb); ")
    assert error.endswith(" GB resident when stopped")
    assert _gone(int(child.read_text()))  # The whole process group.
    assert outcomes[1].answer["ok"]


def test_a_check_job_stopped_at_its_limit_keeps_the_checks_that_ended(tmp_path):
    names = [c.name for c in checker.all_checks()]
    job = scheduler.Job("m", {"name": "m", "check": "/models/m", "checks": names[:2],
                           "running": names[2], "sleep": 60, "skip_checks": [names[-1]]},
                     GIB, 1.0)
    (outcome,), _, _ = _run(tmp_path, [job], limits=ONE_SECOND)
    reason = "the model exceeded the time limit of 1 s (--timeout_s)"
    assert outcome.answer["error"] == f"stopped during {names[2]}: {reason}"
    report = reports.from_json(outcome.answer["report"])
    assert (report.path, report.task, report.task_source) == (
        "/models/m", "feature_vector", "as requested")
    assert [r.check for r in report.results] == names
    assert [r.status for r in report.results[:3]] == ["passed", "passed", "error"]
    assert report.results[2].findings[-1].message == f"stopped: {reason}"
    assert {f.message for r in report.results[3:-1] for f in r.findings} == {
        f"not run: {reason} during {names[2]}"}
    assert report.results[-1].findings[0].message == "not run: --skip_checks"
    assert outcome.answer["text"].splitlines()[-1].startswith("/models/m: FAILS (1 error")


def test_shards_split_everything_once_and_evenly():
    items = [("m%d" % i, cost) for i, cost in enumerate([9, 8, 7, 5, 4, 3, 3, 2, 1, 1])]
    shards = [catalog.select_shard(items, f"{i}/3", lambda item: item[1]) for i in range(3)]
    names = [name for shard in shards for name, _ in shard]
    assert sorted(names) == sorted(name for name, _ in items)
    totals = [sum(cost for _, cost in shard) for shard in shards]
    assert max(totals) - min(totals) <= 1
    for shard in shards:  # Each keeps the catalog's order.
        assert shard == [item for item in items if item in shard]
    assert catalog.select_shard(items, None, lambda item: item[1]) == items


@pytest.mark.parametrize("spec", ["2/2", "1", "a/b", "-1/2", "0/0", "1/2/3"])
def test_a_bad_shard_is_refused_with_the_form(spec):
    with pytest.raises(UserError, match=rf"--shard={spec} is not a shard; allowed: I/N"):
        catalog.parse_shard(spec)


def test_memory_estimate_grows_with_model_and_size():
    from hubexport import export

    small = export.plan("MobileNetV2", "feature_vector", 32, "none")
    large = export.plan("ConvNeXtXLarge", "feature_vector", 32, "none")
    full = export.plan("MobileNetV2", "feature_vector", 224, "none")
    assert catalog.estimate(small)[0] < catalog.estimate(full)[0] < catalog.estimate(large)[0]
    assert catalog.estimate(small)[1] < catalog.estimate(large)[1]
    assert catalog.estimate(large)[0] > 14 * GIB  # Measured peak at 32x32: 11 GiB.


def test_progress_durations_read_well():
    assert [scheduler.duration(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_available_memory_is_read_from_proc():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    assert 0 < memory.available() < 2**50


def test_every_full_size_catalog_model_fits_a_24_gib_machine_by_its_estimate():
    """The check's gradient steps take fewer images at large sizes
    (contract.gradient_batch); with 3 images at 600x600 EfficientNetB7 ran out of
    24 GiB (estimated 30 GB). Measured with one: 14.0 GB."""
    root = os.path.join(os.path.dirname(__file__), "..", "export_configs")
    plans = catalog.catalog_plans(root, {"weights": "none"}, min_size=False)
    too_big = {name: catalog.estimate(plan)[0] / GIB for name, _, plan in plans
               if catalog.estimate(plan)[0] > 22.5 * GIB}
    assert too_big == {}
    b7 = next(plan for name, _, plan in plans if name == "efficientnetb7_classification")
    assert 14.0e9 <= catalog.estimate(b7)[0] <= 16e9


def test_check_estimates_come_from_the_provenance_or_the_bytes(tmp_path):
    from hubexport import export

    b7 = tmp_path / "b7"
    (b7 / "assets.extra").mkdir(parents=True)
    (b7 / export.PROVENANCE_FILE).write_text(
        '{"architecture": "EfficientNetB7", "image_size": 600}')
    plan = export.plan("EfficientNetB7", "classification", 600, "none")
    # Its 270 MB of weights on disk would say far less than the 14 GB it takes.
    assert catalog.estimate_check(str(b7), 270e6) == catalog.estimate(plan)
    other = tmp_path / "other"
    other.mkdir()
    small, large = (catalog.estimate_check(str(other), n) for n in (10e6, 1e9))
    assert small[0] < large[0] and small[1] < large[1]


def test_a_record_is_replaced_whole_or_not_at_all(tmp_path):
    """export_all's records and summary (hubexport.atomic): a write that fails
    half-way leaves the old file as it was, and no partial file beside it."""
    path = tmp_path / "m.json"
    atomic.write_json(str(path), {"key": "old"})
    with pytest.raises(TypeError):  # After '{"key": ' is written.
        atomic.write_json(str(path), {"key": object()})
    assert json.loads(path.read_text()) == {"key": "old"}
    assert os.listdir(tmp_path) == ["m.json"]
