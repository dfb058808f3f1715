"""What an export and its check are expected to take: peak memory and seconds; no TensorFlow.

    memory, seconds = estimates.estimate(plan)
    memory, seconds = estimates.estimate_check("/models/m", size_on_disk)

Peak memory and seconds of an export and its check, fitted to the catalog
run on 2 cores (BUILD_NOTES.md): a worker with TensorFlow, Keras, tf_keras
and tensorflow_hub loaded and a small model traced (DenseNet121 at 32x32
peaked at 2.1 GB), ~40 bytes per parameter and 2.5 MB per layer (the model,
its traced and reloaded copies, gradients) and the activations of the
check's gradient steps, growing with their pixels (contract.gradient_batch
images) and layers (EfficientNetB7 at 600x600, one image: 14.0 GB, 14.8
estimated); time grows with layers (tracing, saving, loading), parameters,
and parameters times pixels (compute; ~1 at 224x224). Estimates order and
pack the jobs (hubexport.batch.scheduler) and split the shards; they need
not be exact, but the memory one should not fall short (the catalog tier
compares it with every model's measured peak).
"""

import os

from hubexport import architectures, contract, export
from hubexport.batch import memory

GIB = memory.GIB
_BASE_BYTES = 2 * GIB
_BYTES_PER_PARAMETER = 40
_BYTES_PER_LAYER = 2.5e6  # EfficientNetB7 at 32x32 (813 layers): 6.7 GB.
_BYTES_PER_STEP_PIXEL_LAYER = 27
_OTHER_LAYERS = 200  # A model not in the table: a mid-sized application's depth.
_SECONDS = 6.0
_SECONDS_PER_LAYER = 0.08
_SECONDS_PER_MEGAPARAMETER = 0.2
_SECONDS_PER_MEGAPARAMETER_AT_224 = 0.2


def estimate(plan):
    """(peak bytes, seconds) expected for exporting and checking `plan`."""
    if plan.architecture is None:  # An own model: its file is about its weights.
        return _estimate(os.path.getsize(plan.keras_model.path) / 4, _OTHER_LAYERS,
                         plan.image_size)
    return _estimate(plan.architecture.params * 1e6, plan.architecture.layers,
                     plan.image_size)


def estimate_check(path, size_on_disk):
    """(peak bytes, seconds) expected for checking the SavedModel at `path`.

    From the architecture table and the size in the provenance of a hubexport
    export, else from the bytes on disk (about 4 per parameter) at 224x224,
    the size the checker calls a free-size model at without provenance.
    """
    provenance = contract.load_provenance(path)
    arch = architectures.ARCHITECTURES.get(provenance.architecture)
    size = provenance.image_size
    size = max(size) if isinstance(size, list) else size
    if not isinstance(size, int) or size <= 0:
        size = None
    if arch:
        return _estimate(arch.params * 1e6, arch.layers, size)
    return _estimate(size_on_disk / 4, _OTHER_LAYERS, size)


def _estimate(parameters, layers, size):
    size = size or 224
    pixels = size**2
    step_pixels = contract.gradient_batch(size, size) * pixels
    memory = (_BASE_BYTES + _BYTES_PER_PARAMETER * parameters + _BYTES_PER_LAYER * layers
              + _BYTES_PER_STEP_PIXEL_LAYER * step_pixels * layers)
    megaparameters = parameters / 1e6
    seconds = (_SECONDS + _SECONDS_PER_LAYER * layers
               + _SECONDS_PER_MEGAPARAMETER * megaparameters
               + _SECONDS_PER_MEGAPARAMETER_AT_224 * megaparameters * pixels / 224**2)
    return int(memory), seconds
