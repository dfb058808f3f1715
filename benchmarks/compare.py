"""hubexport's exports against Keras' own, on the same weights: speed, size, memory.

    .venv/bin/python benchmarks/compare.py                      # the full run
    .venv/bin/python benchmarks/compare.py --models=MobileNetV2 \
        --image_size=96 --batch_sizes=1,4 --repeats=2 --json=out.json  # a quick one

For each model (built with keras.utils.set_random_seed(1), weights=None and
saved to one weights file that every artifact loads) it measures:

  inference   exported __call__ (tf.saved_model.load), hub.KerasLayer in tf_keras
              and keras.layers.TFSMLayer, each called inside a tf.function,
              against the native Keras 3 model in a tf.function on input already
              run through keras.applications.<module>.preprocess_input(255 * x).
  fine-tune   one SGD step (forward, backward, apply; tf.function, no XLA)
              through hub.KerasLayer(trainable=True) + Dense against the native
              Keras 3 model + Dense.
  size        SavedModel bytes against parameter bytes, Keras 3 model.export()
              and tf.saved_model.save of the tf_keras application.
  export      wall time of export.export (its phases from the log callback;
              "verify" is the reload-and-compare) against build + model.export().
  load        tf.saved_model.load of either export; peak RSS of an export.
  check       checker.check of the hubexport export.

Exports, loads and checks each run in a fresh child process (TensorFlow keeps
what it built and optimized for the life of a process); inference and training
run in one child per model, alternating the candidates so machine noise hits
all of them. Tables give medians; ratios are candidate / baseline.
"""

import argparse
import contextlib
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from hubexport.batch import memory

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1e6


# ---------------------------------------------------------------- children
# Each runs in a fresh process (see run_child) and returns a JSON-able dict.

def _build(library, name, size, task):
    import importlib

    keras = importlib.import_module(library)
    kwargs = dict(weights=None, input_shape=(size, size, 3))
    if task == "classification":
        kwargs.update(include_top=True, classifier_activation=None)
    else:
        kwargs.update(include_top=False, pooling="avg")
    return getattr(keras.applications, name)(**kwargs)


def _native(name, size, task, weights):
    model = _build("keras", name, size, task)
    model.load_weights(weights)
    return model


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_prepare(name, size, task, weights, tf_keras_dir):
    """Writes the shared weights file and the tf_keras SavedModel."""
    import keras
    import numpy as np
    import tensorflow as tf
    import tf_keras

    keras.utils.set_random_seed(1)
    model = _build("keras", name, size, task)
    model.save_weights(weights)
    params = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    legacy = _build("tf_keras", name, size, task)
    by_name = {layer.name: layer for layer in model.layers}
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    x = tf.random.uniform([2, size, size, 3], 0, 255, seed=0)
    ours = tf.function(lambda x: model(x, training=False))(x).numpy()
    theirs = tf.function(lambda x: legacy(x, training=False))(x).numpy()
    difference = float(np.abs(ours - theirs).max() / np.abs(ours).max())
    if not difference < 1e-4:
        raise SystemExit(f"tf_keras {name} differs from Keras 3 by {difference:.1e}")
    tf.saved_model.save(legacy, tf_keras_dir)
    return {"param_bytes": params, "params": model.count_params(),
            "tf_keras_difference": difference, "tf_keras_bytes": _dir_bytes(tf_keras_dir)}


def child_export_hubexport(name, size, task, weights, output, jit, check):
    import time

    import keras  # noqa: F401  (imported before the baseline RSS, as in export_keras)
    from hubexport import checker, export

    before = _rss()
    stamps = []
    kwargs = {"jit_compile": True} if jit else {}
    plan = export.plan(name, task, size, weights, **kwargs)
    result = export.export(plan, output, log=lambda m: stamps.append((m, time.monotonic(), _rss())))
    peak = _rss()
    phases = {}
    for (message, start, _), (_, end, _) in zip(stamps, stamps[1:]):
        key = {"Building": "build", "Tracing": "save", "Reloading": "verify"}.get(message.split()[0])
        if key:
            phases[key] = phases.get(key, 0.0) + end - start
    out = {"seconds": result.seconds, "phases": phases, "difference": result.max_relative_difference,
           "rss_before": before, "rss_peak": peak, "bytes": _dir_bytes(output),
           "rss_before_verify": next(r for m, _, r in stamps if m.startswith("Reloading")),
           "graph_bytes": os.path.getsize(os.path.join(output, "saved_model.pb"))}
    if check:
        report = checker.check(output)
        out.update(check=report.seconds, check_fails=report.fails(strict=False))
    return out


def child_export_keras(name, size, task, weights, output):
    import contextlib
    import io
    import time

    import keras  # noqa: F401

    before = _rss()
    start = time.monotonic()
    model = _native(name, size, task, weights)
    built = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..."
        model.export(output)
    end = time.monotonic()
    return {"seconds": end - start, "phases": {"build": built - start, "save": end - built},
            "rss_before": before, "rss_peak": _rss(), "bytes": _dir_bytes(output),
            "graph_bytes": os.path.getsize(os.path.join(output, "saved_model.pb"))}


def child_load(path):
    import time

    import tensorflow as tf

    start = time.monotonic()
    tf.saved_model.load(path)
    return {"seconds": time.monotonic() - start}


def _timed(fn, x, calls):
    import time

    start = time.perf_counter()
    for _ in range(calls):
        result = fn(*x)
    (result[0] if isinstance(result, (list, tuple)) else result).numpy()
    return (time.perf_counter() - start) / calls


def _interleaved_samples(candidates, inputs, repeats, warmup=2, budget=0.3):
    """Seconds per call of every candidate, `repeats` samples each, alternating."""
    for name, fn in candidates.items():
        for _ in range(warmup):
            _timed(fn, inputs[name], 1)
    first = next(iter(candidates))
    calls = max(1, min(50, round(budget / _timed(candidates[first], inputs[first], 1))))
    samples = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(_timed(candidates[name], inputs[name], calls))
    return samples


def _interleaved(candidates, inputs, repeats, warmup=2, budget=0.3):
    """Median seconds per call of every candidate, alternating between them."""
    samples = _interleaved_samples(candidates, inputs, repeats, warmup, budget)
    return {name: statistics.median(s) for name, s in samples.items()}


def _train_step(model, optimizer, trainable):
    import tensorflow as tf

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        variables = trainable()
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return step


def child_inference(name, size, task, weights, hub_path, jit_path, batches, repeats,
                    train_batch, train_repeats):
    import importlib

    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    from hubexport.architectures import ARCHITECTURES

    preprocess = importlib.import_module(
        f"keras.applications.{ARCHITECTURES[name].module}").preprocess_input
    native = _native(name, size, task, weights)
    loaded = tf.saved_model.load(hub_path)
    hub_model = tf_keras.Sequential([tf_keras.Input((size, size, 3)), hub.KerasLayer(hub_path)])
    tfsm = keras.layers.TFSMLayer(hub_path, call_endpoint="serve",
                                  call_training_endpoint="serve_training")
    candidates = {
        "native": tf.function(lambda x: native(x, training=False)),
        "hubexport __call__": lambda x: loaded(x),
        "hub.KerasLayer": tf.function(lambda x: hub_model(x, training=False)),
        "TFSMLayer": tf.function(lambda x: tfsm(x, training=False)),
    }
    if jit_path:
        jit_loaded = tf.saved_model.load(jit_path)
        candidates["__call__ jit"] = lambda x: jit_loaded(x)
    out = {}
    rng = np.random.default_rng(0)
    for batch in map(int, batches.split(",")):
        x = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
        inputs = {c: (tf.constant(x),) for c in candidates}
        inputs["native"] = (tf.constant(preprocess(255.0 * x)),)
        out[f"inference b{batch}"] = _interleaved(candidates, inputs, repeats)

    x = rng.uniform(0, 1, (train_batch, size, size, 3)).astype("float32")
    y = tf.constant(rng.integers(0, 10, train_batch))
    head = keras.Sequential([native, keras.layers.Dense(10)])
    hub_head = tf_keras.Sequential([tf_keras.Input((size, size, 3)),
                                    hub.KerasLayer(hub_path, trainable=True),
                                    tf_keras.layers.Dense(10)])
    steps = {
        "native": _train_step(head, keras.optimizers.SGD(0.001),
                              lambda: head.trainable_variables),
        "hub.KerasLayer": _train_step(hub_head, tf_keras.optimizers.SGD(0.001),
                                      lambda: hub_head.trainable_variables),
    }
    train_inputs = {"native": (tf.constant(preprocess(255.0 * x)), y),
                    "hub.KerasLayer": (tf.constant(x), y)}
    out[f"fine-tune b{train_batch}"] = _interleaved(steps, train_inputs, train_repeats, budget=0)
    out["trainable"] = {"native": len(head.trainable_variables),
                        "hub.KerasLayer": len(hub_head.trainable_variables)}
    return out


def child(mode, args):
    result = globals()[f"child_{mode}"](*json.loads(args[0]))
    print(json.dumps(result))


# ---------------------------------------------------------------- parent

def run_child(mode, *args, required=True):
    # Run from this directory: hubexport comes from the environment, not the cwd.
    code = f"import sys, compare; compare.child({mode!r}, sys.argv[1:])"
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=HERE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if completed.returncode:  # Reported, and the run goes on (-9: killed, out of memory?).
        lines = [x for x in completed.stderr.splitlines() if not x.startswith(("I0000", "WARNING: All"))]
        print(f"{mode} {args[0]} failed (exit {completed.returncode}):", *lines[-5:], sep="\n  ")
        if required:
            sys.exit(1)
        return None
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine():
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    total = memory.total()  # MemTotal.
    ram = f"{total / memory.GIB:.0f} GiB" if total else "?"
    versions = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf, keras, tf_keras, tensorflow_hub as h;"
         "print(f'TF {tf.__version__}, Keras {keras.__version__}, tf_keras {tf_keras.__version__}, "
         "tensorflow_hub {h.__version__}')"], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.strip()
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {ram}, load {load:.1f} at start; "
            f"Python {platform.python_version()}, {versions}")


def jit_available():
    from hubexport import export

    return "jit_compile" in inspect.signature(export.plan).parameters


def median_of(runs, *keys):
    def get(run):
        for key in keys:
            run = run[key]
        return run
    return statistics.median(get(r) for r in runs)


def measure(name, args, work, jit):
    """All the numbers of one model, as a dict of medians (and the raw runs)."""
    model = (name, args.image_size, args.task)
    weights = os.path.join(work, f"{name}.weights.h5")
    paths = {k: os.path.join(work, f"{name}_{k}") for k in ("tf_keras", "keras", "hubexport", "jit")}
    prepared = run_child("prepare", *model, weights, paths["tf_keras"])
    exports = {"keras": [], "hubexport": []}
    for r in range(args.export_repeats):
        for kind in (("keras", "hubexport") if r % 2 == 0 else ("hubexport", "keras")):
            out = os.path.join(work, f"{name}_{kind}_{r}")
            exports[kind].append(
                run_child("export_keras", *model, weights, out) if kind == "keras"
                else run_child("export_hubexport", *model, weights, out, False, True))
            if r == 0:
                os.rename(out, paths[kind])
    if jit:
        exports["jit"] = [run_child("export_hubexport", *model, weights, paths["jit"], True, False)]
    loads = {"keras": [], "hubexport": []}
    for r in range(args.export_repeats):
        for kind in (("keras", "hubexport") if r % 2 == 0 else ("hubexport", "keras")):
            loads[kind].append(run_child("load", paths[kind])["seconds"])
    timing = run_child("inference", *model, weights, paths["hubexport"],
                       paths["jit"] if jit else "", args.batch_sizes, args.repeats, args.train_batch, args.train_repeats,
                       required=False)
    return {"prepared": prepared, "exports": exports, "loads": loads, "timing": timing}


def ms(seconds):
    return f"{seconds * 1e3:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def report(name, m, args):
    """Prints one model's block; returns its targets as {target: (met, detail)}."""
    p, e, t = m["prepared"], m["exports"], m["timing"]
    params = p["param_bytes"]
    print(f"\n== {name} {args.task} {args.image_size}x{args.image_size} "
          f"({p['params'] / 1e6:.1f}M params, {params / MB:.1f}MB; tf_keras copy differs "
          f"by {p['tf_keras_difference']:.0e}) ==")
    targets = {}
    for row, times in (t or {"inference": "failed"}).items():
        if times == "failed":
            print(f"{row:14}: failed (see above)")
        if row == "trainable" or times == "failed":
            continue
        base = times["native"]
        cells = [f"native {ms(base)}"] + [
            f"{k} {ms(v)} ({v / base:.2f}x)" for k, v in times.items() if k != "native"]
        print(f"{row:14}: " + " | ".join(cells))
        if row.startswith("inference"):
            ratio = times["hubexport __call__"] / base
            targets[f"{row} within 2%"] = (ratio <= 1.02, f"{ratio:.3f}x")
        else:
            ratio = times["hub.KerasLayer"] / base
            targets[f"{row} hub.KerasLayer within 10%"] = (ratio <= 1.10, f"{ratio:.3f}x")
    size = {k: median_of(e[k], "bytes") for k in e}
    graph = {k: median_of(e[k], "graph_bytes") for k in e}
    print(f"{'size':14}: params {params / MB:.1f}MB | " + " | ".join(
        f"{k} {size[k] / MB:.1f}MB ({size[k] / params:.2f}x; graph {graph[k] / MB:.1f}MB)"
        for k in ("hubexport", "keras")) +
        f" | tf_keras {p['tf_keras_bytes'] / MB:.1f}MB ({p['tf_keras_bytes'] / params:.2f}x)")
    targets["size <= tf_keras"] = (size["hubexport"] <= p["tf_keras_bytes"],
                                   f"{size['hubexport'] / p['tf_keras_bytes']:.2f}x")
    phase = {k: {ph: median_of(e[k], "phases", ph) for ph in e[k][0]["phases"]} for k in e}
    total = {k: median_of(e[k], "seconds") for k in e}
    print(f"{'export':14}: keras export {total['keras']:.1f}s (build {phase['keras']['build']:.1f}s "
          f"+ export {phase['keras']['save']:.1f}s) | hubexport {total['hubexport']:.1f}s "
          f"({total['hubexport'] / total['keras']:.2f}x; build {phase['hubexport']['build']:.1f}s + "
          f"trace&save {phase['hubexport']['save']:.1f}s + verify {phase['hubexport']['verify']:.1f}s)"
          + (f" | jit export {total['jit']:.1f}s" if "jit" in e else ""))
    allowed = total["keras"] + phase["hubexport"]["verify"]
    targets["export <= keras + verify"] = (total["hubexport"] <= allowed,
                                           f"{total['hubexport']:.1f}s vs {allowed:.1f}s")
    load = {k: statistics.median(v) for k, v in m["loads"].items()}
    print(f"{'load':14}: keras export {load['keras']:.2f}s | hubexport {load['hubexport']:.2f}s "
          f"({load['hubexport'] / load['keras']:.2f}x)")
    rss = {k: {x: median_of(e[k], x) for x in e[k][0] if x.startswith("rss")} for k in e}
    print(f"{'peak RSS':14}: " + " | ".join(
        f"{k} {rss[k]['rss_peak'] / MB:.0f}MB (+{(rss[k]['rss_peak'] - rss[k]['rss_before']) / MB:.0f}MB "
        f"over imports = {(rss[k]['rss_peak'] - rss[k]['rss_before']) / params:.0f}x params)"
        for k in ("keras", "hubexport")) + " | hubexport before verify +"
        f"{(rss['hubexport']['rss_before_verify'] - rss['hubexport']['rss_before']) / MB:.0f}MB")
    print(f"{'check':14}: {median_of(e['hubexport'], 'check'):.1f}s "
          f"({'FAILS' if e['hubexport'][0]['check_fails'] else 'conforms'})")
    return targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="MobileNetV2,ResNet50,EfficientNetB0,ConvNeXtTiny")
    parser.add_argument("--task", default="classification")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--train_batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per inference row")
    parser.add_argument("--train_repeats", type=int, default=3, help="timed fine-tuning steps")
    parser.add_argument("--export_repeats", type=int, default=1, help="exports/loads per model")
    parser.add_argument("--workdir", help="keep the artifacts here (default: a temporary directory)")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    jit = args.jit_compile and jit_available()
    if args.jit_compile and not jit:
        print("--jit_compile: export.plan has no jit_compile option in this hubexport; skipped")
    print("inference: every candidate called inside a tf.function (the exported __call__ "
          "directly, as loaded), warmed up, alternated; medians of --repeats samples")
    results, targets = {}, {}
    with (contextlib.nullcontext(args.workdir) if args.workdir
          else tempfile.TemporaryDirectory(prefix="hubexport-compare-")) as work:
        work = os.path.abspath(work)
        os.makedirs(work, exist_ok=True)
        for name in args.models.split(","):
            results[name] = measure(name, args, work, jit)
            targets[name] = report(name, results[name], args)
            sys.stdout.flush()
            if args.json:  # After every model, so a failure later keeps these.
                with open(args.json, "w") as f:
                    json.dump({"args": vars(args), "results": results}, f, indent=1)
    print("\n== targets ==")
    for name, model_targets in targets.items():
        for target, (met, detail) in model_targets.items():
            print(f"{name:16} {target:36} {'met' if met else 'MISSED':7} {detail}")


if __name__ == "__main__":
    main()
