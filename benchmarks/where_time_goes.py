"""Where an export's and a check's time goes, step by step (BUILD_NOTES.md M7).

    .venv/bin/python benchmarks/where_time_goes.py ResNet101:classification \
        EfficientNetB3:feature_vector [--all_checks]

Each model is exported at its architecture's minimum size with weights=none
and then checked on the export's own load, as a catalog job does (without
--all_checks, with the catalog tier's skips for most models: the fine-tuning
checks and litert_conversion left out), in a fresh process under cProfile.
The table gives each step's cumulative seconds and its share of the export
(or of the check): the parts of hubexport's export and the parts of
TensorFlow's save and load that they spend most in. Profiling slows Python
down, so the shares, not the seconds, are the measurement.
"""

import argparse
import json
from importlib import metadata
import os
import platform
import subprocess
import sys
import tempfile

# (label, part of the export or check, a function as pstats names it: file suffix, name)
STEPS = (
    ("export", None, ("hubexport/export/__init__.py", "export")),
    ("build the Keras model", "export", ("hubexport/export/sources.py", "build_model")),
    ("trace the model (make_root)", "export", ("hubexport/reusable.py", "make_root")),
    ("tf.saved_model.save", "export", ("saved_model/save.py", "save_and_return_nodes")),
    ("  the saver's save and restore functions", "export",
     ("checkpoint/functional_saver.py", "to_proto")),
    ("  custom gradients traced", "export", ("saved_model/save.py", "_trace_gradient_functions")),
    ("  signatures canonicalized", "export",
     ("saved_model/signature_serialization.py", "canonicalize_signatures")),
    ("  children listed", "export",
     ("saved_model/signature_serialization.py", "validate_augmented_graph_view")),
    ("reload (tf.saved_model.load)", "export", ("hubexport/export/verification.py", "_load")),
    ("  FunctionDefs back into Python graphs", "export",
     ("saved_model/function_deserialization.py", "load_function_def_library")),
    ("verify every endpoint", "export", ("hubexport/export/verification.py", "verify")),
    ("check", None, ("hubexport/checker.py", "check")),
    ("  hub_frozen", "check", ("hubexport/check/consumers.py", "hub_frozen")),
    ("  free_size", "check", ("hubexport/check/call.py", "free_size")),
    ("  deterministic", "check", ("hubexport/check/call.py", "deterministic")),
)

_CHILD = """
import cProfile, json, pstats, sys, tempfile
from hubexport import startup
startup.quiet_tensorflow()
from hubexport import architectures, checker, export
name, task, all_checks, steps = sys.argv[1], sys.argv[2], sys.argv[3] == "1", json.loads(sys.argv[4])
plan = export.plan(name, task, architectures.lookup(name).min_size, "none")
skip = () if all_checks else tuple(
    c.name for c in checker.all_checks() if c.fine_tuning) + ("litert_conversion",)
profile = cProfile.Profile()
with tempfile.TemporaryDirectory() as scratch:
    profile.enable()
    result = export.export(plan, scratch + "/model", keep_loaded=True)
    report = checker.check(scratch + "/model", loaded=result.loaded, skip=skip)
    profile.disable()
stats = pstats.Stats(profile).stats
seconds = {}
for label, _, (suffix, function) in steps:
    seconds[label] = sum(cumulative for (path, _, name), (_, _, _, cumulative, _) in stats.items()
                         if path.endswith(suffix) and name == function)
print(json.dumps({"seconds": seconds, "verdict": report.verdict()}))
"""


def measure(name, task, all_checks):
    steps = [(label, part, list(where)) for label, part, where in STEPS]
    with tempfile.TemporaryDirectory() as scratch:  # No stray files in the project.
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, name, task, "1" if all_checks else "0",
             json.dumps(steps)],
            capture_output=True, text=True, check=True, cwd=scratch)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="ARCHITECTURE:TASK")
    parser.add_argument("--all_checks", action="store_true",
                        help="run every check (default: the catalog tier's skips)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, TensorFlow {metadata.version('tensorflow')}")
    for model in args.models:
        name, task = model.split(":")
        result = measure(name, task, args.all_checks)
        seconds = result["seconds"]
        print(f"\n{name} {task} at its minimum size ({result['verdict']}):")
        for label, part, _ in STEPS:
            whole = seconds[part] if part else None
            share = f"{seconds[label] / whole:6.0%}" if whole else ""
            print(f"  {label:44} {seconds[label]:7.2f} s {share}")


if __name__ == "__main__":
    main()
