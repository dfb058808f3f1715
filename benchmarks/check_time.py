"""Time of exporting and checking models, against a baseline measured beside it.

    .venv/bin/python benchmarks/check_time.py ConvNeXtBase:feature_vector \
        EfficientNetB0:classification --repeats=3 [--compare=grappler|shared_load|identity_eq]

Each model is exported once per run at its architecture's minimum size with
weights=none and then checked, as the catalog tier does. Every measurement
runs in a fresh process (TensorFlow keeps what it optimized and built for a
function for the life of the process), alternating baseline and candidate,
and the table gives medians and the ratio candidate/baseline. The machine is
described first. What is compared:

  grappler     Grappler on (TensorFlow's default) against off, which is what
               hubexport does while verifying an export and while checking
               (hubexport/grappler.py).
  shared_load  the check loading the export from disk against the check using
               the object the export's verification loaded
               (export.export(keep_loaded=True), as export_all's workers do).
  identity_eq  tf.saved_model.save of a Keras application with TensorFlow's
               default Tensor == against tensors compared by identity, which
               is what hubexport does (export.write._tensors_compared_by_identity).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from hubexport.batch import memory

# One export + check in a child process; prints one JSON line of seconds.
_CHILD = """
import contextlib, json, sys, time
from hubexport import checker, export, grappler
from hubexport.architectures import ARCHITECTURES

name, task, output, compare, setting = sys.argv[1:]
if compare == "grappler" and setting == "baseline":
    grappler.disabled = contextlib.nullcontext
if compare == "identity_eq" and setting == "baseline":
    export.write._tensors_compared_by_identity = lambda enabled: contextlib.nullcontext()
shared = compare == "shared_load" and setting == "candidate"
arch = ARCHITECTURES[name]
result = export.export(export.plan(name, task, arch.min_size, "none"), output,
                       keep_loaded=shared)
report = checker.check(output, loaded=result.loaded)
slowest = sorted(report.results, key=lambda r: -r.seconds)[:3]
print(json.dumps({
    "export": result.seconds, "check": report.seconds,
    "fails": report.fails(strict=False),
    "slowest": {r.check: round(r.seconds, 1) for r in slowest},
}))
"""


def machine():
    cores = os.cpu_count()
    total = memory.total()  # MemTotal.
    ram = f"{total / memory.GIB:.0f} GiB" if total else "?"
    return (f"{platform.machine()}, {cores} cores, {ram}, "
            f"Python {platform.python_version()}")


# compare: (name of the baseline, name of the candidate).
SETTINGS = {"grappler": ("on", "off"), "shared_load": ("reload", "shared"),
            "identity_eq": ("elementwise", "identity")}


def run(name, task, compare, setting, directory):
    output = os.path.join(directory, f"{name}_{task}_{setting}")
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, name, task, output, compare, setting],
        capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if completed.returncode:
        sys.exit(f"{name} {task} ({setting}) failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="Architecture:task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", choices=sorted(SETTINGS), default="grappler")
    args = parser.parse_args()
    baseline, candidate = names = SETTINGS[args.compare]
    print(f"machine: {machine()}")
    print(f"{'model':36} {'phase':6} {baseline + ' (s)':>11} {candidate + ' (s)':>11} "
          f"{candidate + '/' + baseline:>14}")
    for model in args.models:
        name, task = model.split(":")
        times = {"baseline": [], "candidate": []}
        for _ in range(args.repeats):
            for setting in times:
                with tempfile.TemporaryDirectory() as directory:
                    result = run(name, task, args.compare, setting, directory)
                if result["fails"]:
                    sys.exit(f"{model} ({names[setting == 'candidate']}) does not conform")
                times[setting].append(result)
        for phase in ("export", "check"):
            base = statistics.median(r[phase] for r in times["baseline"])
            new = statistics.median(r[phase] for r in times["candidate"])
            print(f"{model:36} {phase:6} {base:11.1f} {new:11.1f} {new / base:14.2f}")
        print(f"{'':36} slowest checks, {candidate}: {times['candidate'][-1]['slowest']}")


if __name__ == "__main__":
    main()
