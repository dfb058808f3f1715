"""Many models at once: `export_all` over a config directory, `check` over many.

    code = catalog.export_all("export_configs", "models", jobs=2, log=print)
    code = catalog.check_all(["models"], jobs=2, log=print)

Both run their models in worker processes (hubexport.runner), take
`shard="I/N"` (a CI matrix of N machines, each running shard I), print a
progress line per model and end with a summary table.

export_all is resumable. Every export records a request key in its
provenance (export.request_key: the config as planned, the weights' sha256
and the library versions), and after its check a record in
OUTPUT_DIR/.hubexport/NAME.json. A model whose output holds the same key and
whose record exists is not redone; one exported but not yet checked is only
checked. An export is written beside its output and moved into place only
when verified, so an interrupted run leaves nothing partial; the next run
removes what a killed worker left behind and goes on where the last one
stopped. An output from another config, weights or library version is
replaced only with --overwrite.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import sys

from hubexport import config as config_lib
from hubexport import architectures, checker, export, reports, runner
from hubexport.errors import UserError

STATE_DIR = ".hubexport"
GIB = runner.GIB


def parse_shard(spec):
    """"I/N" -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in spec.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise UserError(
            f"--shard={spec} is not a shard; allowed: I/N with 0 <= I < N, e.g. "
            "--shard=0/4 for the first of four machines"
        ) from None
    return index, count


def select_shard(items, spec, cost):
    """The items of shard `spec` ("I/N", or None for all), in their order.

    Every machine computes the same split: items in order of decreasing
    cost(item), each to the shard with the least cost so far, so the shards
    take about equally long.
    """
    if spec is None:
        return list(items)
    index, count = parse_shard(spec)
    totals = [0.0] * count
    mine = set()
    for position, item in sorted(enumerate(items), key=lambda p: (-cost(p[1]), p[0])):
        shard = totals.index(min(totals))
        totals[shard] += cost(item)
        if shard == index:
            mine.add(position)
    return [item for position, item in enumerate(items) if position in mine]


# Peak memory and seconds of an export and its check, fitted to the catalog
# run on 2 cores (BUILD_NOTES.md): a worker with TensorFlow, Keras, tf_keras
# and tensorflow_hub loaded and a small model traced (DenseNet121 at 32x32
# peaked at 2.1 GB), ~40 bytes per parameter and 2.5 MB per layer (the model,
# its traced and reloaded copies, gradients) and the activations of the
# check's gradient steps, growing with their pixels (checker.gradient_batch
# images) and layers (EfficientNetB7 at 600x600, one image: 14.0 GB, 14.8
# estimated); time grows with layers (tracing, saving, loading), parameters,
# and parameters times pixels (compute; ~1 at 224x224). Estimates order and
# pack the jobs; they need not be exact, but the memory one should not fall
# short (the catalog tier compares it with every model's measured peak).
_BASE_BYTES = 2 * GIB
_BYTES_PER_PARAMETER = 40
_BYTES_PER_LAYER = 2.5e6  # EfficientNetB7 at 32x32 (813 layers): 6.7 GB.
_BYTES_PER_STEP_PIXEL_LAYER = 27
_OTHER_LAYERS = 200  # A model not in the table: a mid-sized application's depth.
_SECONDS = 6.0
_SECONDS_PER_LAYER = 0.08
_SECONDS_PER_MEGAPARAMETER = 0.2
_SECONDS_PER_MEGAPARAMETER_AT_224 = 0.2


def estimate(plan):
    """(peak bytes, seconds) expected for exporting and checking `plan`."""
    if plan.architecture is None:  # An own model: its file is about its weights.
        return _estimate(os.path.getsize(plan.keras_model.path) / 4, _OTHER_LAYERS,
                         plan.image_size)
    return _estimate(plan.architecture.params * 1e6, plan.architecture.layers,
                     plan.image_size)


def estimate_check(path, size_on_disk):
    """(peak bytes, seconds) expected for checking the SavedModel at `path`.

    From the architecture table and the size in the provenance of a hubexport
    export, else from the bytes on disk (about 4 per parameter) at 224x224,
    the size the checker calls a free-size model at without provenance.
    """
    provenance = export.read_provenance(path)
    provenance = provenance if isinstance(provenance, dict) else {}
    arch = architectures.ARCHITECTURES.get(provenance.get("architecture"))
    size = provenance.get("image_size")
    size = max(size) if isinstance(size, list) else size
    if not isinstance(size, int) or size <= 0:
        size = None
    if arch:
        return _estimate(arch.params * 1e6, arch.layers, size)
    return _estimate(size_on_disk / 4, _OTHER_LAYERS, size)


def _estimate(parameters, layers, size):
    size = size or 224
    pixels = size**2
    step_pixels = checker.gradient_batch(size, size) * pixels
    memory = (_BASE_BYTES + _BYTES_PER_PARAMETER * parameters + _BYTES_PER_LAYER * layers
              + _BYTES_PER_STEP_PIXEL_LAYER * step_pixels * layers)
    megaparameters = parameters / 1e6
    seconds = (_SECONDS + _SECONDS_PER_LAYER * layers
               + _SECONDS_PER_MEGAPARAMETER * megaparameters
               + _SECONDS_PER_MEGAPARAMETER_AT_224 * megaparameters * pixels / 224**2)
    return int(memory), seconds


@dataclasses.dataclass(frozen=True)
class Row:
    """One model's line in the summary."""

    name: str
    status: str  # "exported", "checked", "done before", "FAILED" or "not finished".
    seconds: float = 0.0
    size: int | None = None
    peak: int | None = None  # Bytes: the worker's peak resident memory.
    start: int | None = None  # Bytes: the worker's resident memory as the job began.
    verdict: str = ""  # "CONFORMS", "FAILS" or "" when not checked.
    error: str = ""
    report: dict | None = None  # The model's entry of reports.to_json.
    key: str = ""  # export.request_key of the export.

    @property
    def failed(self):
        return self.status == "FAILED" or self.verdict == "FAILS"


@contextlib.contextmanager
def _lock(state_dir):
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another hubexport export_all is writing {os.path.dirname(state_dir)}; "
                "wait for it to finish or choose another --output_dir"
            ) from None
        yield


def export_all(config_dir, output_dir, overrides=None, *, min_size=False, overwrite=False,
               overwrite_any_saved_model=False, jobs=1, shard=None, memory_budget=None, check=True, skip_checks=(),
               task=None, json_report=None, log=print):
    """`hubexport export_all`; returns the exit code (1 if a model failed).

    task: only the configs of this task (None: all).
    overwrite, overwrite_any_saved_model: which existing outputs may be
      replaced (export.check_output's rule); any other is refused, untouched.
    skip_checks: names of checks not run on the exports (checker.check's
      skip), or a function of a Plan giving them for that model (the catalog
      tier's: some checks on some models only).
    """
    if task is not None:
        architectures.check_task(task)
    if not check and skip_checks:
        raise UserError(
            "--skip_checks has no effect with --nocheck_exports (no check runs); "
            "drop one of them"
        )
    # What the checks of this run leave out, per model: all of them without checks.
    names = None if callable(skip_checks) else checker.check_names(skip_checks)

    def skipped_for(plan):
        if not check:
            return tuple(c.name for c in checker.all_checks())
        return names if names is not None else checker.check_names(skip_checks(plan))

    plans = catalog_plans(config_dir, overrides or {}, min_size)
    # Sharded first, so that a machine of a matrix runs its shard's configs of
    # each task whichever --task it is given.
    plans = select_shard(plans, shard, lambda p: estimate(p[2])[1])
    plans = [p for p in plans if task in (None, p[2].task)]
    if not plans:
        log(f"shard {shard} has no models" if shard else f"no {task} configs in {config_dir}")
        if json_report:
            _write_json(json_report, [])
        return 0
    output_dir = os.path.abspath(os.path.expanduser(output_dir))
    state_dir = os.path.join(output_dir, STATE_DIR)
    config_paths = dict(config_lib.catalog(config_dir))
    replace = {"overwrite": overwrite, "overwrite_any_saved_model": overwrite_any_saved_model}
    with _lock(state_dir):
        rows, to_run, skipped = {}, [], {}
        for name, settings, plan in plans:
            _remove_leftovers(output_dir, name)
            skipped[name] = skipped_for(plan)
            inputs = (config_paths[name], settings.get("labels"))
            rows[name], job = _resume(name, settings, plan, output_dir, state_dir,
                                      {**replace, "inputs": inputs}, check, skipped[name])
            if job:
                to_run.append(job)
        done = sum(row.status == "done before" for row in rows.values())
        refused = sum(row.status == "FAILED" for row in rows.values())
        log(f"{len(plans)} models{f' (shard {shard})' if shard else ''}"
            + (f" ({task})" if task else "") + f": {done} done before, "
            + (f"{refused} refused, " if refused else "")
            + f"{len(to_run)} to run with {jobs} worker{'s' * (jobs != 1)}")

        def record(outcome):
            name = outcome.job.name
            rows[name] = _record(outcome, state_dir, rows[name], skipped[name])
            unfinished.discard(name)

        unfinished = {job.name for job in to_run}
        try:
            runner.run(to_run, jobs, log=log, on_outcome=record, memory_budget=memory_budget,
                       worker_log=os.path.join(state_dir, "workers.log"))
        except KeyboardInterrupt:  # Say what finished (the next run resumes from it).
            log(summary([dataclasses.replace(rows[name], status="not finished")
                         if name in unfinished else rows[name] for name, _, _ in plans]))
            raise
    ordered = [rows[name] for name, _, _ in plans]
    log(summary(ordered))
    if json_report:
        _write_json(json_report, ordered)
    return 1 if any(r.failed for r in ordered) else 0


def catalog_plans(config_dir, overrides, min_size):
    """(name, settings, Plan) of every config, all validated before anything runs."""
    plans = []
    for name, path in config_lib.catalog(config_dir):
        settings = {**config_lib.load(path), **overrides}
        try:
            if min_size and "architecture" in settings:
                settings["image_size"] = architectures.lookup(settings["architecture"]).min_size
            plans.append((name, settings, export.plan(**settings)))
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    return plans


def _remove_leftovers(output_dir, name):
    """What a killed export of `name` left: its staging and retired directories."""
    if not os.path.isdir(output_dir):
        return
    for entry in os.listdir(output_dir):
        if entry.startswith((f".{name}.partial-", f".{name}.old-")):
            shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)


def _resume(name, settings, plan, output_dir, state_dir, replace, check, skip_checks=()):
    """(Row, Job or None): what is already done for `name`, and what is left.

    replace: export.export's overwrite, overwrite_any_saved_model and inputs
    (the config and labels files); an output that may not be replaced, or
    that is or holds an input, is a FAILED row and no job (nothing touched).
    A record whose check skipped no more than `skip_checks` is done; one that
    skipped more (or was not checked) is checked again.
    """
    output = os.path.join(output_dir, name)
    key = export.request_key(plan)
    memory, seconds = estimate(plan)
    request = {"export": settings, "output": output, **replace,
               "inputs": list(replace["inputs"]), "check": check,
               "skip_checks": list(skip_checks)}
    refusal = export.inputs_refusal(output, (*replace["inputs"], *export.plan_inputs(plan)),
                                    output)
    if refusal:
        return Row(name, "FAILED", error=refusal), None
    if os.path.exists(output):
        provenance = export.read_provenance(output) or {}
        if provenance.get("request_key") == key:
            record = _read_record(state_dir, name)
            if (record and record.get("key") == key
                    and set(record.get("skipped_checks", ())) <= set(skip_checks)):
                return Row(name, "done before", **record["row"]), None
            if not check:
                return Row(name, "done before", size=_bytes(output)), None
            return Row(name, "checked", key=key), runner.Job(
                name, {**request, "export": None}, memory, seconds / 2)
        if not replace["overwrite"] and export.written_by_hubexport(output):
            return Row(name, "FAILED", error=(
                f"{output} exists from another config, weights or library version; "
                "pass --overwrite to replace it")), None
        refusal = export.replace_refusal(output, replace["overwrite"],
                                         replace["overwrite_any_saved_model"], output)
        if refusal:
            return Row(name, "FAILED", error=refusal), None
    return Row(name, "exported", key=key), runner.Job(name, request, memory, seconds)


def _finished(row, outcome):
    """`row` with what the worker answered to its job: time, memory, verdict or error."""
    answer = outcome.answer
    row = dataclasses.replace(row, seconds=outcome.seconds, peak=answer.get("peak_bytes"),
                              start=answer.get("start_bytes"))
    if not answer.get("ok"):
        return dataclasses.replace(row, status="FAILED", error=answer.get("error", ""))
    report = answer.get("report")
    return dataclasses.replace(row, report=report,
                               verdict=report["verdict"].upper() if report else "")


def _record(outcome, state_dir, row, skip_checks=()):
    """The finished job's Row; a successful one is also recorded for resuming."""
    row = _finished(row, outcome)
    if row.status == "FAILED":
        return row
    row = dataclasses.replace(row, size=_bytes(outcome.job.request["output"]))
    fields = {f: getattr(row, f)
              for f in ("seconds", "size", "peak", "start", "verdict", "report")}
    _write_atomically(os.path.join(state_dir, f"{row.name}.json"),
                      {"key": row.key, "skipped_checks": list(skip_checks), "row": fields})
    return row


def _read_record(state_dir, name):
    try:
        with open(os.path.join(state_dir, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_atomically(path, data):
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(partial, path)


def _bytes(directory):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory) for name in names
    )


def _size(size):
    if size is None:
        return ""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def summary(rows):
    """The final table: model, what happened, seconds, size, peak memory, verdict."""
    lines = [f"{'model':40} {'status':12} {'seconds':>8} {'size':>10} {'peak':>10}  check"]
    for r in rows:
        verdict = r.verdict or (f"- ({r.error})" if r.error else "-")
        lines.append(f"{r.name:40} {r.status:12} {r.seconds:8.1f} {_size(r.size):>10} "
                     f"{_size(r.peak):>10}  {verdict}")
    failed = sum(r.failed for r in rows)
    before = sum(r.status == "done before" for r in rows)
    unfinished = sum(r.status == "not finished" for r in rows)  # An interrupted run's.
    seconds = sum(r.seconds for r in rows if r.status != "done before")
    lines.append(f"{len(rows)} models, {failed} failed or not conforming, "
                 + (f"{before} done before, " if before else "")
                 + (f"{unfinished} not finished (interrupted), " if unfinished else "")
                 + f"{runner.duration(seconds)} of work in this run")
    return "\n".join(lines)


def _write_json(path, rows):
    data = {"format": "hubexport-export-all/1",
            "models": [{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
                       for r in rows]}
    _write_atomically(os.path.abspath(path), data)


def saved_models(paths):
    """`paths`, with a directory of SavedModels replaced by those SavedModels."""
    found = []
    for path in paths:
        inside = []
        if os.path.isdir(path) and not _is_saved_model(path):
            inside = sorted(
                os.path.join(path, entry) for entry in os.listdir(path)
                if not entry.startswith(".") and _is_saved_model(os.path.join(path, entry)))
        found.extend(inside or [path])
    return found


def _is_saved_model(path):
    return any(os.path.isfile(os.path.join(path, name))
               for name in ("saved_model.pb", "saved_model.pbtxt"))


def check_all(paths, *, task="auto", strict=False, allow_unsafe_ops=False, skip_checks=(),
              jobs=1, shard=None, memory_budget=None, json_report=None, junit_xml=None,
              log=print, out=sys.stdout, limits=None):
    """`hubexport check` over many models; returns the exit code.

    With jobs=1 the models are checked one after another, each in a child
    process within `limits` (checker.run); with more, in worker processes
    (no limits), and a summary table ends the output.
    """
    checker.validate(task, json_report, junit_xml, skip_checks)
    models = saved_models(paths)
    sizes = {path: _bytes(path) for path in models}
    models = select_shard(models, shard, sizes.get)
    if not models:
        log(f"shard {shard} has no models")
        return 0
    if jobs == 1:
        return checker.run(models, task, json_report, junit_xml, strict, allow_unsafe_ops,
                           out=out, skip=tuple(skip_checks), limits=limits, log=log)
    request = {"task": task, "strict": strict, "allow_unsafe_ops": allow_unsafe_ops,
               "skip_checks": list(skip_checks)}
    to_run = []
    for path in models:
        memory, seconds = estimate_check(path, sizes[path])
        to_run.append(runner.Job(path, {**request, "check": path}, memory, seconds / 2))

    def show(outcome):
        if outcome.answer.get("ok"):
            out.write(outcome.answer["text"])
            out.flush()

    outcomes = runner.run(to_run, jobs, log=log, on_outcome=show, memory_budget=memory_budget)
    rows = [_finished(Row(o.job.name, "checked", size=sizes[o.job.name]), o)
            for o in outcomes]
    log(summary(rows))
    model_reports = [reports.from_json(r.report) if r.report
                     else reports.failed(r.name, "worker", r.error, r.seconds) for r in rows]
    if json_report:
        reports.write_json(model_reports, json_report, strict)
    if junit_xml:
        reports.write_junit_xml(model_reports, junit_xml, strict)
    return 1 if any(r.failed for r in rows) else 0
