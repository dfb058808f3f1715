"""The flags of export_all and check for many models: how many run at once,
which shard, and each model's time and memory limits."""

from absl import flags

from hubexport.batch import limits as limits_lib

JOBS = flags.DEFINE_integer(
    "jobs", 1,
    "export_all, check: models run at once, each in its own worker process "
    "(never more than the free memory allows).", lower_bound=1)
SHARD = flags.DEFINE_string(
    "shard", None,
    "export_all, check: I/N runs the I-th of N equal parts (0 <= I < N), e.g. "
    "one per machine of a CI matrix.")
MEMORY_GB = flags.DEFINE_float(
    "memory_gb", None,
    "export_all, check: the most memory one model may use: a model whose worker "
    "process (with its children) holds more resident memory is stopped, with an error naming "
    f"the check or export that was running (default: {limits_lib.MEMORY_SHARE:.0%} of "
    "this machine's RAM, so it stops before the kernel's out-of-memory killer would). "
    "With --jobs above 1 also what the running models may use together (default "
    "there: what is free at the start, less 0.5 GB).", lower_bound=0)
TIMEOUT_S = flags.DEFINE_float(
    "timeout_s", None,
    "check, export_all: seconds one model may take (each model runs in a worker "
    "process, stopped past it with an error naming the check or export that was "
    "running; the checks that ended keep their findings). Default: check "
    f"{limits_lib.DEFAULT_TIMEOUT_S:g}, more than 3x the catalog's longest check at full "
    "size on a slow, busy machine (about 530 s; 200 s quiet: ResNetRS420 at 320, "
    f"EfficientNetB7 at 600); export_all {limits_lib.EXPORT_TIMEOUT_S:g} for a model's "
    "export and check together, more than 6x the slowest full-size catalog model's "
    "(205 s quiet, about 550 s slow and beside another).", lower_bound=1)

FLAG_NAMES = {"jobs", "shard", "memory_gb", "timeout_s"}


def scheduling():
    """The scheduling flags of export_all and check, as catalog's keyword arguments."""
    budget = None if MEMORY_GB.value is None else int(MEMORY_GB.value * 1e9)
    return {"jobs": JOBS.value, "shard": SHARD.value, "memory_budget": budget}


def limits(default_seconds):
    """The limits per model: --timeout_s (or `default_seconds`), and --memory_gb or
    most of the RAM (limits.requested refuses a value that is no limit)."""
    return limits_lib.requested(TIMEOUT_S.value, MEMORY_GB.value, default_seconds)
