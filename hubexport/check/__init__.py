"""The checks of `hubexport check`, grouped by the section of HUB_CONTRACT.md they verify.

    context          what the checks share: Context, Skip, the registry, findings
    files            F1, F2: the files (graph_scan and ops.toml: F2's scan)
    root             R1-R4: the root object
    call             C1-C4: the call
    hyperparameters  C5: the call's hyperparameters
    consumers        K1, K2: hub.KerasLayer, Keras 3
    serving          K3: TF Serving
    litert           K3, optional: LiteRT converts serving_default (--require=litert)
    parts            what several groups read from a SavedModel

This module imports no TensorFlow (hubexport.checker and the CLI's help import
it): ORDER names the checks; CHECKS, the registered checks in that order,
imports the group modules when first read, and Context, Skip, Unavailable,
Check, error, warning and info import .context. Each check is registered with
its clause of hubexport.contract.CLAUSES, and those that run the training=True
trace with fine_tuning=True (Check.fine_tuning); the batch sizes, tolerances
and endpoint names are hubexport.contract's.
"""

import importlib

GROUPS = ("files", "root", "call", "hyperparameters", "consumers", "serving", "litert")

# By clause, but training_gradients (R3) runs with the fine-tuning checks, after C5:
# it builds the gradient that hub_fine_tuning and tfsm_layer reuse (consumers._compile).
ORDER = (
    "saved_model_files", "tf2_saved_model",  # F1
    "no_unsafe_ops",  # F2
    "loads", "restored_call", "variables", "trainable_variables",  # R1-R3
    "regularization_losses",  # R4
    "input_signature", "free_size", "training_argument", "training_call",  # C1, C2
    "deterministic", "batch_independent",  # C3
    "output_tensor", "documented_output_size", "output_finite", "feature_size_constant",
    "logits_not_probabilities", "top_k_labels",  # C4
    "hyperparameters", "hyperparameter_effects",  # C5
    "training_gradients",  # R3
    "hub_fine_tuning", "hub_frozen",  # K1
    "tfsm_layer", "serve_endpoint", "serve_training_mode",  # K2
    "serving_signature", "serving_output",  # K3
    "litert_conversion",  # K3, an optional consumer: warnings unless REQUIRABLE asks
)

# Optional consumers: --require=NAME makes the findings of these checks errors
# (warnings and "could not run" alike; hubexport.checker.apply_require).
REQUIRABLE = {"litert": ("litert_conversion",)}

_FROM_CONTEXT = ("Check", "Context", "Skip", "Unavailable", "error", "warning", "info")


def __getattr__(name):
    """CHECKS and the names of _FROM_CONTEXT, imported when first asked for."""
    if name == "CHECKS":
        from hubexport.check import context

        for group in GROUPS:
            importlib.import_module(f"{__name__}.{group}")
        globals()["CHECKS"] = ordered(context.REGISTERED)
        return globals()["CHECKS"]
    if name in _FROM_CONTEXT:
        from hubexport.check import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ordered(registered):
    """The registered Checks as a list in ORDER; refuses a check that ORDER leaves
    out, or a name that it lists twice or that no group registers."""
    names = [c.name for c in registered]
    if sorted(names) != sorted(ORDER) or len(set(ORDER)) != len(ORDER):
        raise RuntimeError(
            f"hubexport.check.ORDER must name each registered check once; it leaves out "
            f"{sorted(set(names) - set(ORDER))} and names {sorted(set(ORDER) - set(names))}, "
            "which no group registers (or one name twice)")
    by_name = {c.name: c for c in registered}
    return [by_name[name] for name in ORDER]
