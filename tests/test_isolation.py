"""A check always ends: each model's checks run in a worker process with limits.

Four tests start real workers (each imports TensorFlow, seconds): the good
model, a model whose __call__ never ends (alone, and with --jobs=2 beside the
good one), one that allocates without end, and none else; the rest drive
hubexport.batch.limits with stand-in workers (a few lines of Python, no
TensorFlow) that report some checks and then hang, fail or die.
"""

import functools
import json
import math
import os
import signal
import sys
import textwrap
import time

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

# catalog now, at collection: check_all's `out=sys.stdout` default is bound at its
# import, and a capsys stream of one test is closed in the next.
from hubexport import catalog, checker, cli  # noqa: F401
from hubexport.batch import limits as limits_lib
from hubexport.batch import memory

import mutants

CHECKS = [c.name for c in checker.all_checks()]
NO_MEMORY_LIMIT = math.inf


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")

    def build(name, builder):
        path = str(root / name)
        if not os.path.exists(path):
            builder(path)
        return path

    return build


def _endless(path, allocate=False):
    """A conforming root whose __call__ runs a While loop that never ends (plain
    math: it passes the F2 scan); with allocate, each step fills 1 GiB per image."""
    model = mutants.tiny_model()

    @tf.function(autograph=False)
    def call(images, training=False):
        outputs = mutants._forward(model, images, training)
        shape = tf.stack([tf.shape(images)[0] * 256, 1024, 1024])

        def step(i, total):
            more = tf.reduce_sum(tf.ones(shape)) if allocate else tf.cast(i, tf.float32)
            return tf.math.floormod(i + 1, 7), total + more

        _, total = tf.while_loop(lambda i, total: i >= 0, step, [0, 0.0],
                                 parallel_iterations=1)
        return outputs + 0.0 * total

    mutants._save(path, mutants._root(model, call))


def _run_cli(*args, command="check"):
    with flagsaver.flagsaver():
        return cli.main(flags.FLAGS(["hubexport", command, *args]))


def _stopped_at(statuses):
    """The name of the one check with an error."""
    errors = [name for name, status in statuses if status == "error"]
    assert len(errors) == 1, statuses
    return errors[0]


# Real children.


def test_good_model_gets_the_same_findings_isolated_as_in_process(model_dir):
    path = model_dir("good", mutants.good)
    shown = []
    report = limits_lib.check(path, on_result=shown.append)
    in_process = checker.check(path)
    assert [(r.check, r.clause, r.findings) for r in report.results] == [
        (r.check, r.clause, r.findings) for r in in_process.results]
    assert (report.task, report.task_source) == (in_process.task, in_process.task_source)
    assert report.verdict() == "CONFORMS"
    assert [r.check for r in shown] == CHECKS  # Each as it ended, in order.


def test_the_next_check_reuses_a_small_worker_and_not_one_past_half_its_limit(model_dir):
    """A worker that answered is kept for the next model (no TensorFlow start-up),
    unless its resident memory is half the next check's limit or more."""
    path = model_dir("good", mutants.good)
    only_files = tuple(name for name in CHECKS if name != "saved_model_files")  # Quick.
    limits_lib._Spare.close_kept()
    assert limits_lib.check(path, skip=only_files).verdict() == "CONFORMS"
    first = limits_lib._Spare.kept.process
    assert limits_lib.check(path, skip=only_files).verdict() == "CONFORMS"
    assert limits_lib._Spare.kept.process is first and first.poll() is None
    resident = memory.resident(first.pid)
    tight = limits_lib.Limits(600, 1.5 * resident)  # Under 2x what it holds: a fresh one.
    assert limits_lib.check(path, skip=only_files, limits=tight).verdict() == "CONFORMS"
    assert limits_lib._Spare.kept.process is not first and first.poll() is not None
    limits_lib._Spare.close_kept()
    assert limits_lib._Spare.kept is None


@pytest.mark.slow
def test_a_call_that_never_ends_is_stopped_at_the_time_limit(model_dir, tmp_path, capsys):
    path = model_dir("endless", _endless)
    json_path = tmp_path / "report.json"
    assert _run_cli(path, "--timeout_s=30", f"--json_report={json_path}") == 1
    out = capsys.readouterr().out
    model = json.load(open(json_path))["models"][0]
    checks = model["checks"]
    stopped = _stopped_at([(c["check"], c["status"]) for c in checks])
    position = CHECKS.index(stopped)
    assert position > CHECKS.index("loads")  # The checks before it kept their findings.
    assert all(c["status"] == "passed" for c in checks[:position]), checks[:position]
    error = checks[position]["findings"][-1]
    assert error["message"] == ("stopped: the model exceeded the time limit of 30 s "
                                "(--timeout_s)")
    assert "raise --timeout_s" in error["hint"]
    for c in checks[position + 1:]:
        assert c["status"] == "skipped"
        assert c["findings"][0]["message"] == (
            f"not run: the model exceeded the time limit of 30 s (--timeout_s) during "
            f"{stopped}")
    # A progress line per check as it ended (the text report follows, as before,
    # on check_all's `out`, bound before capsys replaced sys.stdout).
    assert f"hubexport: [1/{len(CHECKS)}] F1 saved_model_files: passed" in out
    assert f"[{position + 1}/{len(CHECKS)}] {checks[position]['clause']} {stopped}: error" in out
    assert model["verdict"] == "fails"


@pytest.mark.slow
def test_many_jobs_stop_a_call_that_never_ends_and_check_the_others(model_dir, tmp_path,
                                                                    capsys):
    models = tmp_path / "models"
    models.mkdir()
    for name, builder in (("endless", _endless), ("good", mutants.good)):
        os.symlink(model_dir(name, builder), models / name)
    json_path = tmp_path / "report.json"
    # The good model's check takes about 15 s on a busy machine; 60 s leaves 4x.
    assert _run_cli(str(models), "--jobs=2", "--timeout_s=60",
                    f"--json_report={json_path}") == 1
    out = capsys.readouterr().out
    by_name = {os.path.basename(m["path"]): m for m in json.load(open(json_path))["models"]}
    assert by_name["good"]["verdict"] == "conforms"
    checks = by_name["endless"]["checks"]
    stopped = _stopped_at([(c["check"], c["status"]) for c in checks])
    position = CHECKS.index(stopped)
    assert position > CHECKS.index("loads")
    assert all(c["status"] == "passed" for c in checks[:position]), checks[:position]
    reason = "the model exceeded the time limit of 60 s (--timeout_s)"
    assert checks[position]["findings"][-1]["message"] == f"stopped: {reason}"
    assert {c["findings"][0]["message"] for c in checks[position + 1:]} == {
        f"not run: {reason} during {stopped}"}
    assert f"endless: FAILED: stopped during {stopped}: {reason} in " in out


def test_a_call_that_allocates_without_end_is_stopped_at_the_memory_limit(
        model_dir, tmp_path):
    path = model_dir("allocates", functools.partial(_endless, allocate=True))
    json_path = tmp_path / "report.json"
    assert _run_cli(path, "--memory_gb=1.5", "--timeout_s=120",
                    f"--json_report={json_path}") == 1
    checks = json.load(open(json_path))["models"][0]["checks"]
    stopped = _stopped_at([(c["check"], c["status"]) for c in checks])
    position = CHECKS.index(stopped)
    assert position > CHECKS.index("loads")  # Not the runtime's own memory.
    error = checks[position]["findings"][-1]["message"]
    assert error.startswith("stopped: the model used more than 1.5 GB of memory "
                            "(--memory_gb); ")
    assert error.endswith(" GB resident when stopped")
    assert {c["findings"][0]["message"] for c in checks[position + 1:]} == {
        f"not run: the model used more than 1.5 GB of memory (--memory_gb) during {stopped}"}


# Stand-in children: what the parent makes of messages, hangs and deaths.


def _stand_in(tmp_path, body):
    """A child that reads the request, reports the first two checks (the
    second with a warning), starts the third, then runs `body`."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(f"""\
        import json, os, resource, signal, subprocess, sys, time
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        request = json.loads(sys.stdin.readline())
        def send(message):
            print(json.dumps(message), flush=True)
        names = {CHECKS[:3]!r}
        for name, findings in zip(names[:2], ([], [{{"check": names[1], "clause": "F1",
                "level": "warning", "message": "odd", "hint": ""}}])):
            send({{"started": name, "task": "feature_vector", "task_source": "as requested"}})
            send({{"result": {{"check": name, "clause": "F1", "findings": findings,
                               "seconds": 0.5}}}})
        send({{"started": names[2]}})
        """) + textwrap.dedent(body))
    return (sys.executable, str(script))


def test_a_check_that_fails_in_the_worker_keeps_the_checks_that_ended(tmp_path):
    command = _stand_in(tmp_path, 'send({"ok": False, "error": "RuntimeError: boom"})\n')
    report = limits_lib.check("m", limits=limits_lib.Limits(60, NO_MEMORY_LIMIT),
                             command=command)
    _kept_two_and_stopped_third(report, "the check failed: RuntimeError: boom")


def _kept_two_and_stopped_third(report, message):
    results = report.results
    assert [r.status for r in results[:2]] == ["passed", "warning"]
    assert results[1].findings[0].message == "odd"
    assert (report.task, report.task_source) == ("feature_vector", "as requested")
    assert results[2].check == CHECKS[2] and results[2].status == "error"
    assert results[2].findings[-1].message == f"stopped: {message}"
    assert [r.check for r in results] == CHECKS
    return results[3:]


def test_a_hanging_child_and_its_process_group_are_killed(tmp_path):
    grandchild = tmp_path / "grandchild.pid"
    command = _stand_in(tmp_path, f"""\
        sleeper = subprocess.Popen(["sleep", "1000"])
        open({str(grandchild)!r}, "w").write(str(sleeper.pid))
        time.sleep(1000)
        """)
    shown = []
    report = limits_lib.check("m", skip=("tfsm_layer",), on_result=shown.append,
                             limits=limits_lib.Limits(3, NO_MEMORY_LIMIT), command=command)
    rest = _kept_two_and_stopped_third(
        report, "the model exceeded the time limit of 3 s (--timeout_s)")
    assert [r.check for r in shown] == CHECKS[:3]
    for result in rest:
        reason = ("not run: --skip_checks" if result.check == "tfsm_layer" else
                  f"not run: the model exceeded the time limit of 3 s (--timeout_s) during "
                  f"{CHECKS[2]}")
        assert [(f.level, f.message) for f in result.findings] == [("skipped", reason)]
    assert _gone(int(grandchild.read_text()))


def _gone(pid):
    """Whether `pid` has ended (a zombie waiting for init counts), waiting up to 10 s
    for the kernel to deliver the signal: not a timed assertion, a bound."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_a_child_killed_by_a_signal_is_reported_naming_it(tmp_path):
    command = _stand_in(tmp_path, "os.kill(os.getpid(), signal.SIGSEGV)\n")
    report = limits_lib.check("m", limits=limits_lib.Limits(60, NO_MEMORY_LIMIT),
                             command=command)
    rest = _kept_two_and_stopped_third(report, "the check process was killed by signal SIGSEGV")
    assert {f.message for r in rest for f in r.findings} == {
        f"not run: the check process was killed by signal SIGSEGV during {CHECKS[2]}"}
    assert report.fails()


def test_a_child_that_exits_before_its_report_is_an_error(tmp_path):
    command = _stand_in(tmp_path, "sys.exit(3)\n")
    report = limits_lib.check("m", limits=limits_lib.Limits(60, NO_MEMORY_LIMIT),
                             command=command)
    _kept_two_and_stopped_third(
        report, "the check process ended with exit status 3 before its report")


def test_interrupting_the_parent_kills_the_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = _stand_in(tmp_path, f"""\
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(1000)
        """)

    def interrupt(result):
        if result.check == CHECKS[1]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        limits_lib.check("m", on_result=interrupt, command=command,
                        limits=limits_lib.Limits(60, NO_MEMORY_LIMIT))
    if pid_file.exists():  # Else it was killed before it got there.
        assert _gone(int(pid_file.read_text()))


# Flags and defaults.


def test_default_memory_limit_is_most_of_the_machines_ram():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert limits_lib.default_memory_bytes() == limits_lib.MEMORY_SHARE * total
    assert 0.5 <= limits_lib.MEMORY_SHARE < 1


def test_check_passes_the_flags_as_limits(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(checker, "run", lambda *args, **kwargs: seen.append(kwargs) or 0)
    assert _run_cli(str(tmp_path), "--timeout_s=42", "--memory_gb=2.5") == 0
    assert seen[-1]["limits"] == limits_lib.Limits(42, 2.5e9)
    assert _run_cli(str(tmp_path)) == 0
    assert seen[-1]["limits"] == limits_lib.default_limits()
    assert limits_lib.DEFAULT_TIMEOUT_S >= 1800


def test_check_with_many_jobs_passes_the_flags_as_limits_to_the_runner(monkeypatch, tmp_path):
    from hubexport.batch import scheduler

    seen = []
    monkeypatch.setattr(scheduler, "run", lambda jobs, *args, **kwargs: seen.append(kwargs) or [])
    assert _run_cli(str(tmp_path), "--jobs=2", "--timeout_s=42", "--memory_gb=2.5") == 0
    assert seen[-1]["limits"] == limits_lib.Limits(42, 2.5e9)
    assert seen[-1]["memory_budget"] == 2.5e9  # Also what the jobs may use together.
    assert _run_cli(str(tmp_path), "--jobs=2") == 0
    assert seen[-1]["limits"] == limits_lib.default_limits()


def test_export_all_passes_its_limits_per_model(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(catalog, "export_all", lambda *args, **kwargs: seen.append(kwargs) or 0)
    common = (f"--config_dir={tmp_path}", f"--output_dir={tmp_path}")
    assert _run_cli(*common, "--timeout_s=7", "--memory_gb=3", command="export_all") == 0
    assert seen[-1]["limits"] == limits_lib.Limits(7, 3e9)
    assert _run_cli(*common, command="export_all") == 0
    assert seen[-1]["limits"] == limits_lib.default_limits(limits_lib.EXPORT_TIMEOUT_S)


def test_the_export_all_default_fits_the_catalog_with_a_wide_margin():
    # The catalog CI tier's longest model (export and check at its smallest size,
    # --jobs=2) takes about 5 minutes; the slowest full-size one about 550 s on a
    # slow day beside another model (limits_lib.EXPORT_TIMEOUT_S's comment).
    assert limits_lib.EXPORT_TIMEOUT_S >= 10 * 5 * 60
    assert limits_lib.EXPORT_TIMEOUT_S >= 6 * 550
    assert limits_lib.EXPORT_TIMEOUT_S >= limits_lib.DEFAULT_TIMEOUT_S  # Export and check.


@pytest.mark.parametrize("command", ["check", "export_all"])
@pytest.mark.parametrize("flag", ["--timeout_s=nan", "--timeout_s=inf", "--memory_gb=0",
                                  "--memory_gb=nan", "--memory_gb=inf"])
def test_a_limit_that_is_no_limit_is_a_usage_error(capsys, tmp_path, command, flag):
    paths = ([str(tmp_path)] if command == "check" else
             [f"--config_dir={tmp_path}", f"--output_dir={tmp_path}"])
    assert _run_cli(*paths, flag, "--jobs=2", command=command) == 2
    err = capsys.readouterr().err.strip()
    name, value = flag[2:].split("=")
    assert err == (f"hubexport: error: --{name}={value} is no limit; allowed: a finite number "
                   f"above 0, e.g. --{name}={3600 if name == 'timeout_s' else 16} (leave it "
                   "out for the default)")
