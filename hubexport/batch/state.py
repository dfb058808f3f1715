"""What export_all knows of each model across runs: its records, resuming, the lock.

    with state.lock(state_dir):
        row, job = state.resume(name, settings, plan, output_dir, state_dir, replace, check)
        ...
        row = state.record(outcome, state_dir, row, skipped)

Every export records a request key in its provenance (export.request_key:
the config as planned, the weights' sha256 and the library versions), and
after its check a record in OUTPUT_DIR/.hubexport/NAME.json (STATE_DIR). A
model whose output holds the same key and whose record exists is not redone;
one exported but not yet checked is only checked. An output from another
config, weights or library version is replaced only with --overwrite. What a
killed worker left behind is removed before its model runs again
(remove_leftovers), and a lock refuses a second run on the same directory.
"""

import contextlib
import dataclasses
import fcntl
import json
import os

from hubexport import atomic, contract, export
from hubexport.batch import estimates, scheduler
from hubexport.errors import UserError

STATE_DIR = ".hubexport"


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
def lock(state_dir):
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


def remove_leftovers(output_dir, name):
    """What a killed export of `name` left (atomic.clean_up_beside)."""
    atomic.clean_up_beside(os.path.join(output_dir, name))


def resume(name, settings, plan, output_dir, state_dir, replace, check, skip_checks=()):
    """(Row, scheduler.Job or None): what is already done for `name`, and what is left.

    replace: export.export's overwrite, overwrite_any_saved_model and inputs
    (the config and labels files); an output that may not be replaced, or
    that is or holds an input, is a FAILED row and no job (nothing touched).
    A record whose check skipped no more than `skip_checks` is done; one that
    skipped more (or was not checked) is checked again.
    """
    output = os.path.join(output_dir, name)
    key = export.request_key(plan)
    memory, seconds = estimates.estimate(plan)
    request = {"export": settings, "output": output, **replace,
               "inputs": list(replace["inputs"]), "check": check,
               "skip_checks": list(skip_checks)}
    refusal = export.inputs_refusal(output, (*replace["inputs"], *export.plan_inputs(plan)),
                                    output)
    if refusal:
        return Row(name, "FAILED", error=refusal), None
    if os.path.exists(output):
        if contract.load_provenance(output).request_key == key:
            kept = read_record(state_dir, name)
            if (kept and kept.get("key") == key
                    and set(kept.get("skipped_checks", ())) <= set(skip_checks)):
                return Row(name, "done before", **kept["row"]), None
            if not check:
                return Row(name, "done before", size=bytes_on_disk(output)), None
            return Row(name, "checked", key=key), scheduler.Job(
                name, {**request, "export": None}, memory, seconds / 2)
        if not replace["overwrite"] and export.written_by_hubexport(output):
            return Row(name, "FAILED", error=(
                f"{output} exists from another config, weights or library version; "
                "pass --overwrite to replace it")), None
        refusal = export.replace_refusal(output, replace["overwrite"],
                                         replace["overwrite_any_saved_model"], output)
        if refusal:
            return Row(name, "FAILED", error=refusal), None
    return Row(name, "exported", key=key), scheduler.Job(name, request, memory, seconds)


def finished(row, outcome):
    """`row` with what the worker answered to its job: time, memory, verdict or error
    (a job stopped at a limit during its checks has both: the error and the
    report of the checks that ended)."""
    answer = outcome.answer
    report = answer.get("report")
    row = dataclasses.replace(row, seconds=outcome.seconds, peak=answer.get("peak_bytes"),
                              start=answer.get("start_bytes"), report=report,
                              verdict=report["verdict"].upper() if report else "")
    if not answer.get("ok"):
        return dataclasses.replace(row, status="FAILED", error=answer.get("error", ""))
    return row


def record(outcome, state_dir, row, skip_checks=()):
    """The finished job's Row; a successful one is also recorded for resuming."""
    row = finished(row, outcome)
    if row.status == "FAILED":
        return row
    row = dataclasses.replace(row, size=bytes_on_disk(outcome.job.request["output"]))
    fields = {f: getattr(row, f)
              for f in ("seconds", "size", "peak", "start", "verdict", "report")}
    atomic.write_json(os.path.join(state_dir, f"{row.name}.json"),
                      {"key": row.key, "skipped_checks": list(skip_checks), "row": fields})
    return row


def read_record(state_dir, name):
    try:
        with open(os.path.join(state_dir, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bytes_on_disk(directory):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory) for name in names
    )
