"""`hubexport check PATH ...`: SavedModels against the contract
(hubexport.catalog.check_all: one after another, or --jobs at once)."""

from absl import flags

from hubexport import startup
from hubexport.batch import limits as limits_lib
from hubexport.commands import many
from hubexport.commands.shared import JSON_REPORT, SKIP_CHECKS, TASK, say

_JUNIT_XML = flags.DEFINE_string(
    "junit_xml", None, "check: also write JUnit XML (one test case per check).")
_STRICT = flags.DEFINE_boolean(
    "strict", False, "check: warnings fail the check too.")
_ALLOW_UNSAFE_OPS = flags.DEFINE_boolean(
    "allow_unsafe_ops", False,
    "check: run models whose graphs touch files, processes or the network "
    "(reported as a warning instead of an error).")
_REQUIRE = flags.DEFINE_list(
    "require", [],
    "check: optional consumers whose checks must pass: their warnings (and a check "
    "that could not run, e.g. without the extra) become errors. Allowed: litert "
    "(the litert_conversion check).")

FLAG_NAMES = {"task", "json_report", "junit_xml", "strict", "allow_unsafe_ops",
              "skip_checks", "require", *many.FLAG_NAMES}


def run(paths):
    limits = many.limits(limits_lib.DEFAULT_TIMEOUT_S)
    from hubexport import catalog, checker

    # Paths and report files are refused before TensorFlow is imported (check
    # names need it: hubexport.check defines them).
    if SKIP_CHECKS.value:
        startup.quiet_tensorflow()
    checker.validate(TASK.value or "auto", JSON_REPORT.value, _JUNIT_XML.value,
                     SKIP_CHECKS.value, paths=paths, require=_REQUIRE.value)
    startup.quiet_tensorflow()
    return catalog.check_all(
        paths, task=TASK.value or "auto", json_report=JSON_REPORT.value,
        junit_xml=_JUNIT_XML.value, strict=_STRICT.value,
        allow_unsafe_ops=_ALLOW_UNSAFE_OPS.value, skip_checks=SKIP_CHECKS.value, log=say,
        limits=limits, require=_REQUIRE.value, **many.scheduling())
