"""Many models at once: `export_all` over a config directory, `check` over many.

    code = catalog.export_all("export_configs", "models", jobs=2, log=print)
    code = catalog.check_all(["models"], jobs=2, log=print)

Both run their models in worker processes (hubexport.batch.scheduler), take
`shard="I/N"` (a CI matrix of N machines, each running shard I;
hubexport.batch.shards), print a progress line per model and end with a
summary table.

export_all is resumable (hubexport.batch.state): a model already exported
from the same config, weights and library versions, and checked, is not
redone; one exported but not yet checked is only checked. An export is
written beside its output and moved into place only when verified, so an
interrupted run leaves nothing partial; the next run removes what a killed
worker left behind and goes on where the last one stopped. An output from
another config, weights or library version is replaced only with --overwrite.

Every model's job runs within a time and a memory limit (limits.Limits;
export_all: limits.EXPORT_TIMEOUT_S for its export and check together,
check: limits.DEFAULT_TIMEOUT_S): past either, its worker is killed and
the model FAILED, naming the export or the check that was running (with
the report of the checks that ended); the others go on.
"""

import dataclasses
import os
import sys

from hubexport import atomic, checker, reports
from hubexport import architectures, export
from hubexport import config as config_lib
from hubexport import labels as labels_lib
from hubexport.batch import limits as limits_lib
from hubexport.batch import scheduler, state
from hubexport.batch.estimates import estimate, estimate_check
from hubexport.batch.shards import parse_shard, select_shard
from hubexport.batch.state import STATE_DIR, Row
from hubexport.errors import UserError

# The names of hubexport.batch that callers use as catalog.NAME.
__all__ = ["STATE_DIR", "Row", "catalog_plans", "check_all", "estimate", "estimate_check",
           "export_all", "parse_shard", "saved_models", "select_shard", "summary"]


def export_all(config_dir, output_dir, overrides=None, *, min_size=False, overwrite=False,
               overwrite_any_saved_model=False, jobs=1, shard=None, memory_budget=None, check=True, skip_checks=(),
               task=None, json_report=None, log=print, limits=None):
    """`hubexport export_all`; returns the exit code (1 if a model failed).

    limits: a batch.limits.Limits for each model's export and check (default:
      limits.default_limits(limits.EXPORT_TIMEOUT_S)); a model past
      either FAILED, its leftovers removed.
    task: only the configs of this task (None: all).
    overwrite, overwrite_any_saved_model: which existing outputs may be
      replaced (export.check_output's rule); any other is refused, untouched.
    skip_checks: names of checks not run on the exports (checker.check's
      skip), or a function of a Plan giving them for that model (the catalog
      tier's: some checks on some models only).
    """
    if task is not None:
        architectures.check_task(task)
    skipped_for = _skips(check, skip_checks)
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
    replace = {"overwrite": overwrite, "overwrite_any_saved_model": overwrite_any_saved_model}
    with state.lock(state_dir):
        rows, to_run, skipped = _resumed(plans, config_dir, output_dir, replace, check,
                                         skipped_for)
        log(_what_runs(plans, rows, to_run, shard, task, jobs))

        def record(outcome):
            name = outcome.job.name
            rows[name] = state.record(outcome, state_dir, rows[name], skipped[name])
            if rows[name].status == "FAILED":  # A killed worker's staging, at once.
                state.remove_leftovers(output_dir, name)
            unfinished.discard(name)

        unfinished = {job.name for job in to_run}
        try:
            scheduler.run(to_run, jobs, log=log, on_outcome=record, memory_budget=memory_budget,
                          worker_log=os.path.join(state_dir, "workers.log"),
                          limits=limits or limits_lib.default_limits(limits_lib.EXPORT_TIMEOUT_S))
        except KeyboardInterrupt:  # Say what finished (the next run resumes from it).
            log(summary([dataclasses.replace(rows[name], status="not finished")
                         if name in unfinished else rows[name] for name, _, _ in plans]))
            raise
    ordered = [rows[name] for name, _, _ in plans]
    log(summary(ordered))
    if json_report:
        _write_json(json_report, ordered)
    return 1 if any(r.failed for r in ordered) else 0


def _skips(check, skip_checks):
    """A function of a Plan: the names of the checks its model's job leaves out (all
    of them without checks); refuses an unknown name, or names without checks."""
    if not check and skip_checks:
        raise UserError(
            "--skip_checks has no effect with --nocheck_exports (no check runs); "
            "drop one of them"
        )
    names = None if callable(skip_checks) else checker.check_names(skip_checks)

    def skipped_for(plan):
        if not check:
            return tuple(c.name for c in checker.all_checks())
        return names if names is not None else checker.check_names(skip_checks(plan))

    return skipped_for


def _resumed(plans, config_dir, output_dir, replace, check, skipped_for):
    """({name: Row}, [Job], {name: skipped checks}): what is done and what is left
    (state.resume), after removing what a killed run left behind."""
    state_dir = os.path.join(output_dir, STATE_DIR)
    config_paths = dict(config_lib.catalog(config_dir))
    rows, to_run, skipped = {}, [], {}
    for name, settings, plan in plans:
        state.remove_leftovers(output_dir, name)
        skipped[name] = skipped_for(plan)
        inputs = (config_paths[name], labels_lib.source_file(settings.get("labels")))
        rows[name], job = state.resume(name, settings, plan, output_dir, state_dir,
                                       {**replace, "inputs": inputs}, check, skipped[name])
        if job:
            to_run.append(job)
    return rows, to_run, skipped


def _what_runs(plans, rows, to_run, shard, task, jobs):
    """The line that starts a run: models, done before, refused, to run."""
    done = sum(row.status == "done before" for row in rows.values())
    refused = sum(row.status == "FAILED" for row in rows.values())
    return (f"{len(plans)} models{f' (shard {shard})' if shard else ''}"
            + (f" ({task})" if task else "") + f": {done} done before, "
            + (f"{refused} refused, " if refused else "")
            + f"{len(to_run)} to run with {jobs} worker{'s' * (jobs != 1)}")


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
        verdict = (r.verdict or "-") + (f" ({r.error})" if r.error else "")
        lines.append(f"{r.name:40} {r.status:12} {r.seconds:8.1f} {_size(r.size):>10} "
                     f"{_size(r.peak):>10}  {verdict}")
    failed = sum(r.failed for r in rows)
    before = sum(r.status == "done before" for r in rows)
    unfinished = sum(r.status == "not finished" for r in rows)  # An interrupted run's.
    seconds = sum(r.seconds for r in rows if r.status != "done before")
    lines.append(f"{len(rows)} models, {failed} failed or not conforming, "
                 + (f"{before} done before, " if before else "")
                 + (f"{unfinished} not finished (interrupted), " if unfinished else "")
                 + f"{scheduler.duration(seconds)} of work in this run")
    return "\n".join(lines)


def _write_json(path, rows):
    data = {"format": "hubexport-export-all/1",
            "models": [{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
                       for r in rows]}
    atomic.write_json(os.path.abspath(path), data)


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
              log=print, out=sys.stdout, limits=None, require=()):
    """`hubexport check` over many models; returns the exit code.

    With jobs=1 the models are checked one after another (checker.run);
    with more, in worker processes, and a summary table ends the output;
    either way each model within `limits` (default: limits.default_limits()).
    require: optional consumers whose checks must pass (checker.apply_require),
    applied here to each finished report, so the workers never see it.
    """
    checker.validate(task, json_report, junit_xml, skip_checks, require=require)
    models = saved_models(paths)
    sizes = {path: state.bytes_on_disk(path) for path in models}
    models = select_shard(models, shard, sizes.get)
    if not models:
        log(f"shard {shard} has no models")
        return 0
    if jobs == 1:
        return checker.run(models, task, json_report, junit_xml, strict, allow_unsafe_ops,
                           out=out, skip=tuple(skip_checks), limits=limits, log=log,
                           require=tuple(require))
    request = {"task": task, "strict": strict, "allow_unsafe_ops": allow_unsafe_ops,
               "skip_checks": list(skip_checks)}
    rows = _checked_in_workers(models, sizes, request, jobs, log, out, memory_budget, limits,
                               tuple(require))
    log(summary(rows))
    model_reports = [reports.from_json(r.report) if r.report
                     else reports.failed(r.name, "worker", r.error, r.seconds) for r in rows]
    if json_report:
        reports.write_json(model_reports, json_report, strict)
    if junit_xml:
        reports.write_junit_xml(model_reports, junit_xml, strict)
    return 1 if any(r.failed for r in rows) else 0


def _checked_in_workers(models, sizes, request, jobs, log, out, memory_budget, limits,
                        require=()):
    """The Rows of checking `models` in `jobs` worker processes (request: the
    worker's check job without its path); each text report goes to `out` as it ends,
    with `require` applied to it (_required)."""
    to_run = []
    for path in models:
        memory, seconds = estimate_check(path, sizes[path])
        to_run.append(scheduler.Job(path, {**request, "check": path}, memory, seconds / 2))

    def show(outcome):
        if require and "report" in outcome.answer:
            outcome.answer.update(_required(outcome.answer["report"], require,
                                            request["strict"]))
        if "text" in outcome.answer:
            out.write(outcome.answer["text"])
            out.flush()

    outcomes = scheduler.run(to_run, jobs, log=log, on_outcome=show, memory_budget=memory_budget,
                             limits=limits or limits_lib.default_limits())
    return [state.finished(Row(o.job.name, "checked", size=sizes[o.job.name]), o)
            for o in outcomes]


def _required(model_json, require, strict):
    """A worker's "report" and "text" with checker.apply_require applied, as
    checker.run applies it to its child's report. Updated in the answer itself
    (on_outcome runs before the progress line and the Row read it), so the
    progress line, the text, the table, the JSON and the exit code all agree."""
    report = checker.apply_require(reports.from_json(model_json), require)
    return {"report": reports.to_json([report], strict)["models"][0],
            "text": reports.text([report], strict)}
