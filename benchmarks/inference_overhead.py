"""Where the exported model's inference time goes, against what it is made of.

    .venv/bin/python benchmarks/inference_overhead.py ResNet50 ConvNeXtTiny \
        --batch_sizes=1,32 --repeats=30

benchmarks/compare.py found batch-1 inference through the export 1.04x
(ResNet50) and 1.09x (ConvNeXtTiny) the native model's. This run separates
the candidates that explain such a gap, on the same random weights, in one
process per model, calls alternated and repeated:

  native            the Keras 3 model in a tf.function on input already run
                    through preprocess_input (compare.py's baseline)
  native+prep       the same tf.function doing preprocess_input(255 * x) itself
  keras export      Keras 3 model.export()'s `serve`, reloaded (a restored
                    SavedModel function of the same graph, no preprocessing)
  hubexport         the hubexport export's __call__, reloaded

Each sample is the mean of enough calls to take ~0.3 s; the table gives the
minimum and the median of the samples (a minimum that matches the baseline
while the median does not means noise, not work) and median ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import _interleaved_samples, machine  # noqa: E402

_CHILD = """
import importlib, json, sys
import keras, numpy as np, tensorflow as tf
sys.path.insert(0, sys.argv[1])
from compare import _interleaved_samples
from hubexport import export
from hubexport.architectures import ARCHITECTURES

name, size, directory, batches, repeats = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
arch = ARCHITECTURES[name]
keras.utils.set_random_seed(1)
model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                          classifier_activation=None)
weights = f"{directory}/model.weights.h5"
model.save_weights(weights)
model.export(f"{directory}/keras", verbose=False)
export.export(export.plan(name, "classification", size, weights), f"{directory}/hubexport")
preprocess = importlib.import_module(f"keras.applications.{arch.module}").preprocess_input
keras_export = tf.saved_model.load(f"{directory}/keras")
ours = tf.saved_model.load(f"{directory}/hubexport")
candidates = {
    "native": tf.function(lambda x: model(x, training=False)),
    "native+prep": tf.function(lambda x: model(preprocess(255.0 * x), training=False)),
    "keras export": lambda x: keras_export.serve(x),
    "hubexport": lambda x: ours(x),
}
out = {}
rng = np.random.default_rng(0)
for batch in map(int, batches.split(",")):
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
    prepared = tf.constant(preprocess(255.0 * x))
    inputs = {c: (tf.constant(x),) for c in candidates}
    inputs["native"] = inputs["keras export"] = (prepared,)
    out[batch] = _interleaved_samples(candidates, inputs, repeats)
print(json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'model':14} {'batch':>5} {'candidate':13} {'min ms':>8} {'median ms':>10} "
          f"{'median / native':>16}")
    for name in args.models:
        with tempfile.TemporaryDirectory() as directory:
            completed = subprocess.run(
                [sys.executable, "-c", _CHILD, HERE, name, str(args.image_size), directory,
                 args.batch_sizes, str(args.repeats)],
                capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if completed.returncode:
            sys.exit(f"{name} failed:\n{completed.stderr[-3000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        for batch, samples in result.items():
            native = statistics.median(samples["native"])
            for candidate, times in samples.items():
                median = statistics.median(times)
                print(f"{name:14} {batch:>5} {candidate:13} {1e3 * min(times):8.2f} "
                      f"{1e3 * median:10.2f} {median / native:15.3f}x")


if __name__ == "__main__":
    main()
