"""Catalog tier: every config of export_configs/, exported and checked.

Run with `pytest -m catalog`. To fit CI, each model is exported at its
architecture's minimum size with weights=none (the full-size catalog is
`hubexport export_all --config_dir=export_configs --output_dir=DIR`, see
README.md). HUBEXPORT_SHARD=I/N runs every N-th config starting at I (odd
shards in reverse order), so CI can run two shards side by side;
HUBEXPORT_REPORTS=DIR writes each model's `hubexport check` JUnit report there.

Each model is exported and checked in a child process: a long-lived
TensorFlow process keeps memory that a freed model used (RSS grew past
11 GiB after 13 catalog models and the run was killed), so each model gets a
runtime of its own, at the price of importing TensorFlow once per model.
The largest models take a lock file first, so two shards never run two of
them at once (ConvNeXtXLarge peaks at 11 GiB and ResNetRS420 at 8.4 GiB at
32x32: together with the default tier beside them, over the 24 GiB of a CI
machine).
"""

import contextlib
import fcntl
import os
import subprocess
import sys

import pytest

from conftest import shard
from hubexport import config as config_lib

pytestmark = pytest.mark.catalog

ROOT = os.path.join(os.path.dirname(__file__), "..", "export_configs")

# Exports `config` at its architecture's minimum size with weights=none,
# checks it, writes the JUnit report if asked; exit 1 if the check fails.
_WORKER = """
import sys
from hubexport import checker, config, export, reports
from hubexport.architectures import ARCHITECTURES

config_path, output, junit = sys.argv[1:]
settings = config.load(config_path)
arch = ARCHITECTURES[settings["architecture"]]
plan = export.plan(arch.name, settings["task"], arch.min_size, "none")
result = export.export(plan, output)
print(f"exported in {result.seconds:.1f}s, max relative difference "
      f"{result.max_relative_difference:.1e}")
report = checker.check(output)
if junit:
    reports.write_junit_xml([report], junit)
print(reports.text([report]))
sys.exit(1 if report.fails(strict=False) else 0)
"""


# Measured peak RSS of export + check at the minimum size above ~5 GiB (the
# table's largest models by parameter count, 100 M and up).
HEAVY = {"ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetV2L", "RegNetX320",
         "RegNetY320", "ResNetRS270", "ResNetRS350", "ResNetRS420"}
_LOCK = os.path.join(os.environ.get("TMPDIR", "/tmp"), "hubexport-catalog-heavy.lock")


@contextlib.contextmanager
def _one_heavy_model_at_a_time(architecture):
    if architecture not in HEAVY:
        yield
        return
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


CONFIGS = shard(config_lib.catalog(ROOT))


@pytest.mark.parametrize("name,path", CONFIGS, ids=[name for name, _ in CONFIGS])
def test_catalog_model_exports_and_conforms(name, path, tmp_path):
    directory = os.environ.get("HUBEXPORT_REPORTS")
    junit = ""
    if directory:
        os.makedirs(directory, exist_ok=True)
        junit = os.path.join(directory, f"{name}.xml")
    output = str(tmp_path / name)
    with _one_heavy_model_at_a_time(config_lib.load(path)["architecture"]):
        result = subprocess.run(
            [sys.executable, "-c", _WORKER, path, output, junit],
            capture_output=True, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "exported in" in result.stdout
