"""Exports a Keras application as a reusable image SavedModel.

    plan = export.plan("MobileNetV2", "feature_vector", image_size=224,
                       weights="none")
    export.export(plan, "/tmp/mobilenet_v2", overwrite=False)

The SavedModel is written to a temporary directory beside the output, reloaded
and compared with the source Keras model on the same input, and only then moved
into place. A failure or an interrupt removes the temporary directory and leaves
an existing output untouched.

The steps of an export, one module each (none of them imports this __init__):
  planning         the request validated into a Plan, without TensorFlow
  destination      where the output may be written (checked before the build)
  sources          the Keras model built from the table or the user's file
  write            saved into a staging directory; the atomic install
  verification     the reload compared with the Keras model
  provenance_file  assets.extra/hubexport.json and the model card
The names the CLI, the catalog and the checker use as export.NAME are imported
here (__all__). export() calls its steps through the names imported here: a
test replaces a step with monkeypatch.setattr(export, NAME, ...), and a
function the steps call inside their own module, in that module.
"""

import dataclasses
import time

from hubexport import grappler
from hubexport.export.destination import (
    check_destination,
    check_output,
    check_writable_parent,
    describe_contents,
    inputs_refusal,
    is_saved_model,
    plan_inputs,
    replace_refusal,
    written_by_hubexport,
)
from hubexport.export.planning import POOLINGS, Plan, plan, request_key
from hubexport.contract import PROVENANCE_FILE, load_provenance, read_provenance
from hubexport.export.provenance_file import _write_provenance, provenance
from hubexport.export.sources import Built, _warn_of_depthwise_under_xla, build_model
from hubexport.export.verification import (
    TOLERANCE,
    VerificationError,
    _load,
    relative_difference,
    verify,
)
from hubexport.atomic import staging_beside
from hubexport.export.write import _install, _save

__all__ = [
    "POOLINGS", "PROVENANCE_FILE", "TOLERANCE", "Built", "Plan", "Result",
    "VerificationError", "build_model", "check_destination", "check_output",
    "check_writable_parent", "describe_contents", "export", "inputs_refusal",
    "is_saved_model", "load_provenance", "plan", "plan_inputs", "provenance", "read_provenance",
    "relative_difference", "replace_refusal", "request_key", "verify",
    "written_by_hubexport",
]


@dataclasses.dataclass(frozen=True)
class Result:
    path: str
    seconds: float
    max_relative_difference: float
    # With keep_loaded: what tf.saved_model.load gave the verification (the
    # same files, moved into place), for a check in the same process.
    loaded: object = dataclasses.field(default=None, repr=False, compare=False)


def export(plan, output, overwrite=False, log=lambda message: None, keep_loaded=False, *,
           overwrite_any_saved_model=False, inputs=()):
    """Exports `plan` to the directory `output`; returns a Result.

    overwrite: replace an existing output that hubexport wrote (check_output);
    overwrite_any_saved_model: replace any SavedModel directory.
    inputs: files the export is made from besides plan_inputs(plan) (a labels
      file, a config), which the output must neither be nor contain.
    keep_loaded: return the object the verification loaded in Result.loaded,
    so that a check that follows (hubexport.checker.check(..., loaded=...))
    neither loads the model again nor prepares its functions again.
    """
    output = check_destination(plan, output, overwrite, overwrite_any_saved_model, inputs)
    replace = dict(overwrite=overwrite, overwrite_any_saved_model=overwrite_any_saved_model,
                   inputs=(*inputs, *plan_inputs(plan)))
    start = time.monotonic()

    log(f"Building {plan.describe()} (weights: {plan.weights.describe()})")
    built = build_model(plan, log)
    if plan.jit_compile:
        _warn_of_depthwise_under_xla(built.model, log)
    with staging_beside(output) as staging:
        log("Tracing and saving")
        reference = _save(built, plan, staging)
        log("Reloading and comparing with the Keras model")
        with grappler.disabled():
            loaded = _load(staging)
            difference = verify(loaded, reference, plan, built)
        _write_provenance(staging, plan, built, difference)
        _install(staging, output, **replace)
    seconds = time.monotonic() - start
    log(f"Wrote {output} ({seconds:.1f}s, max relative difference {difference:.1e})")
    return Result(output, seconds, difference, loaded if keep_loaded else None)
