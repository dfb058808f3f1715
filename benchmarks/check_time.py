"""Time of exporting and checking models, with Grappler on (baseline) and off.

    .venv/bin/python benchmarks/check_time.py ConvNeXtBase:feature_vector \
        EfficientNetB0:classification --repeats=3

Each model is exported once per run at its architecture's minimum size with
weights=none, as the catalog tier does. Every measurement runs in a fresh
process (TensorFlow keeps what it optimized and built for a function for the
life of the process), alternating the two settings, and the table gives
medians and the ratio off/on. "on" is TensorFlow's default; "off" is what
hubexport does while verifying an export and while checking
(hubexport/grappler.py). The machine is described first.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

# One export + check in a child process; prints one JSON line of seconds.
_CHILD = """
import contextlib, json, sys, time
from hubexport import checker, export, grappler
from hubexport.architectures import ARCHITECTURES

name, task, output, setting = sys.argv[1:]
if setting == "on":
    grappler.disabled = contextlib.nullcontext
arch = ARCHITECTURES[name]
result = export.export(export.plan(name, task, arch.min_size, "none"), output)
report = checker.check(output)
slowest = sorted(report.results, key=lambda r: -r.seconds)[:3]
print(json.dumps({
    "export": result.seconds, "check": report.seconds,
    "fails": report.fails(strict=False),
    "slowest": {r.check: round(r.seconds, 1) for r in slowest},
}))
"""


def machine():
    cores = os.cpu_count()
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    return (f"{platform.machine()}, {cores} cores, {memory}, "
            f"Python {platform.python_version()}")


def run(name, task, setting, directory):
    output = os.path.join(directory, f"{name}_{task}_{setting}")
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, name, task, output, setting],
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
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'model':36} {'phase':6} {'on (s)':>8} {'off (s)':>8} {'off/on':>7}")
    for model in args.models:
        name, task = model.split(":")
        times = {"on": [], "off": []}
        for _ in range(args.repeats):
            for setting in ("on", "off"):
                with tempfile.TemporaryDirectory() as directory:
                    result = run(name, task, setting, directory)
                if result["fails"]:
                    sys.exit(f"{model} ({setting}) does not conform")
                times[setting].append(result)
        for phase in ("export", "check"):
            on = statistics.median(r[phase] for r in times["on"])
            off = statistics.median(r[phase] for r in times["off"])
            print(f"{model:36} {phase:6} {on:8.1f} {off:8.1f} {off / on:7.2f}")
        print(f"{'':36} slowest checks, off: {times['off'][-1]['slowest']}")


if __name__ == "__main__":
    main()
