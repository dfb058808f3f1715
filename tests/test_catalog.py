"""Catalog tier: every config of export_configs/, exported and checked.

Run with `pytest -m catalog`. It is what a user's CI runs:
`hubexport export_all --min_size --weights=none` over the catalog (each
model at its architecture's smallest size, to fit CI; the full-size catalog
is the same command without --min_size, see README.md), in
HUBEXPORT_JOBS worker processes (default 2), memory-aware
(hubexport.batch.scheduler), every export checked. The fine-tuning checks
(fine_tuning_checks(): the checks registered with fine_tuning=True; they
differentiate the model and fine-tune it through hub.KerasLayer and TFSMLayer,
most of a check's time) and the optional consumers' (litert_conversion) run on
the classification export of one architecture per Keras module (FINE_TUNED:
the members of a module are one constructor at other depths and widths);
every other export, all 142, gets every other check. Then one test per config
reads that model's row of the summary. HUBEXPORT_SHARD=I/N runs shard I of
N; HUBEXPORT_REPORTS=DIR keeps the summary (catalog.json) and the progress
log there.
"""

import functools
import json
import os

import pytest

from conftest import first_of_each_module
from hubexport import catalog, checker

pytestmark = pytest.mark.catalog

ROOT = os.path.join(os.path.dirname(__file__), "..", "export_configs")
OVERRIDES = {"weights": "none"}
SHARD = os.environ.get("HUBEXPORT_SHARD")
PLANS = catalog.select_shard(catalog.catalog_plans(ROOT, OVERRIDES, min_size=True), SHARD,
                             lambda p: catalog.estimate(p[2])[1])


@functools.cache
def fine_tuning_checks():
    """The checks that run the model's training=True trace (the first run of it
    prepares the function: most of a check's time), e.g. hyperparameter_effects
    5-22s per model at 32x32 when it came first (CI, session 13): those tagged
    @check(..., fine_tuning=True), in the order they run (tests/test_checker.py
    names them). Imports TensorFlow, so it is not called at collection."""
    return tuple(entry.name for entry in checker.all_checks() if entry.fine_tuning)


FINE_TUNED = first_of_each_module()


@functools.cache
def optional_consumer_checks():
    """The checks of the optional consumers (hubexport.check.REQUIRABLE: litert_conversion
    converts the model, about 5 s at 32x32), run where the fine-tuning checks run."""
    from hubexport import check

    return tuple(name for names in check.REQUIRABLE.values() for name in names)


def skipped(plan):
    """The checks not run on `plan`'s export (an own model's config: none)."""
    if plan.architecture is None or (
            plan.task == "classification" and plan.architecture.name in FINE_TUNED):
        return ()
    return fine_tuning_checks() + optional_consumer_checks()


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    reports = os.environ.get("HUBEXPORT_REPORTS") or str(tmp_path_factory.mktemp("reports"))
    os.makedirs(reports, exist_ok=True)
    summary = os.path.join(reports, "catalog.json")
    with open(os.path.join(reports, "catalog-progress.log"), "w") as progress:
        def log(message):
            progress.write(message + "\n")
            progress.flush()

        catalog.export_all(
            ROOT, str(tmp_path_factory.mktemp("catalog")), OVERRIDES, min_size=True,
            jobs=int(os.environ.get("HUBEXPORT_JOBS", "2")), shard=SHARD,
            skip_checks=skipped, json_report=summary, log=log)
    with open(summary) as f:
        return {row["name"]: row for row in json.load(f)["models"]}


@pytest.mark.parametrize("name,plan", [(n, p) for n, _, p in PLANS],
                         ids=[n for n, _, _ in PLANS])
def test_catalog_model_exports_and_conforms(name, plan, rows):
    row = rows[name]
    assert row["status"] == "exported", row["error"]
    failing = [f"{c['clause']} {c['check']}: {f['message']}"
               for c in row["report"]["checks"] for f in c["findings"]
               if f["level"] == "error"]
    assert row["verdict"] == "CONFORMS", failing
    not_run = {c["check"] for c in row["report"]["checks"]
               if any(f["message"] == "not run: --skip_checks" for f in c["findings"])}
    assert not_run == set(skipped(plan))
    # The table's free_size and num_features, as the export measured them: the
    # verification compared [batch, num_features] at min_size, and a free size
    # works at a second, non-square size, with as many features (tests/test_architectures.py
    # measures the other rows by building them).
    if plan.architecture and plan.task == "feature_vector" and not plan.feature_layer:
        status = {c["check"]: c["status"] for c in row["report"]["checks"]}
        free = "passed" if plan.architecture.free_size else "skipped"
        assert (status["free_size"], status["feature_size_constant"]) == (free, free)
        assert row["report"]["task"] == "feature_vector"
    # The scheduler's memory estimate covers what the model really took.
    memory, _ = catalog.estimate(plan)
    grew = row["peak"] - row["start"]
    assert grew <= memory, (grew, memory)
