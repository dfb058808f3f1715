"""`hubexport export_all`: every config of a directory, exported and checked
(hubexport.catalog.export_all: in worker processes, resumable)."""

from absl import flags

from hubexport import startup
from hubexport.batch import limits as limits_lib
from hubexport.commands import many
from hubexport.commands.shared import (IMAGE_SIZE, JSON_REPORT, OVERWRITE,
                                       OVERWRITE_ANY_SAVED_MODEL, SKIP_CHECKS, TASK, say)
from hubexport.errors import UserError

_CONFIG_DIR = flags.DEFINE_string(
    "config_dir", None, "export_all: a directory of TOML configs.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "export_all: writes one SavedModel per config here.")
_MIN_SIZE = flags.DEFINE_boolean(
    "min_size", False,
    "export_all: export each architecture at its smallest size (a quick run of "
    "the whole catalog, as CI does; use with --weights=none).")
_CHECK_EXPORTS = flags.DEFINE_boolean(
    "check_exports", True, "export_all: run hubexport check on each export.")

FLAG_NAMES = {"config_dir", "output_dir", "image_size", "weights", "overwrite",
              "overwrite_any_saved_model", "min_size", "task", "check_exports",
              "skip_checks", "json_report", *many.FLAG_NAMES}


def run():
    if not _CONFIG_DIR.value or not _OUTPUT_DIR.value:
        raise UserError(
            "export_all needs --config_dir=DIR and --output_dir=DIR, e.g. "
            "--config_dir=export_configs --output_dir=/tmp/catalog")
    if _MIN_SIZE.value and IMAGE_SIZE.present:
        raise UserError("--min_size and --image_size contradict each other; pass one")
    overrides = {
        name: flags.FLAGS[name].value
        for name in ("image_size", "weights")
        if flags.FLAGS[name].present
    }
    limits = many.limits(limits_lib.EXPORT_TIMEOUT_S)
    from hubexport import catalog, checker

    checker.validate("auto", json_report=JSON_REPORT.value)  # Writable, before any work.
    startup.quiet_tensorflow()
    return catalog.export_all(
        _CONFIG_DIR.value, _OUTPUT_DIR.value, overrides, min_size=_MIN_SIZE.value,
        overwrite=OVERWRITE.value, overwrite_any_saved_model=OVERWRITE_ANY_SAVED_MODEL.value,
        check=_CHECK_EXPORTS.value, task=TASK.value, skip_checks=SKIP_CHECKS.value,
        json_report=JSON_REPORT.value, log=say, limits=limits, **many.scheduling())
