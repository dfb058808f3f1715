"""Catalog tier: every config of export_configs/, exported and checked.

Run with `pytest -m catalog`. To fit CI, each model is exported at its
architecture's minimum size with weights=none (the full-size catalog is
`hubexport export_all --config_dir=export_configs --output_dir=DIR`, see
README.md). HUBEXPORT_SHARD=I/N runs every N-th config starting at I, so CI
can run two shards side by side; HUBEXPORT_REPORTS=DIR writes each model's
`hubexport check` JUnit report there.
"""

import os
import shutil

import pytest

from hubexport import checker
from hubexport import config as config_lib
from hubexport import export
from hubexport import reports
from hubexport.architectures import ARCHITECTURES

pytestmark = pytest.mark.catalog

ROOT = os.path.join(os.path.dirname(__file__), "..", "export_configs")


def _shard(configs):
    spec = os.environ.get("HUBEXPORT_SHARD")
    if not spec:
        return configs
    index, count = (int(part) for part in spec.split("/"))
    return configs[index::count]


CONFIGS = _shard(config_lib.catalog(ROOT))


@pytest.mark.parametrize("name,path", CONFIGS, ids=[name for name, _ in CONFIGS])
def test_catalog_model_exports_and_conforms(name, path, tmp_path):
    settings = config_lib.load(path)
    arch = ARCHITECTURES[settings["architecture"]]
    plan = export.plan(arch.name, settings["task"], arch.min_size, "none")
    output = str(tmp_path / name)
    result = export.export(plan, output)
    assert result.max_relative_difference <= export.TOLERANCE

    report = checker.check(output)
    directory = os.environ.get("HUBEXPORT_REPORTS")
    if directory:
        os.makedirs(directory, exist_ok=True)
        reports.write_junit_xml([report], os.path.join(directory, f"{name}.xml"))
    shutil.rmtree(output)
    assert not report.fails(strict=False), reports.text([report])
