"""The checks of the files (F1, F2): what a loader opens, and no op that acts
outside the model (read before anything runs; see graph_scan)."""

import os

from hubexport.check import graph_scan
from hubexport.check.context import Skip, check, error, info, warning
from hubexport.check.parts import count, tf2_problem
from hubexport.errors import summarize

TF1_HUB_FILE = "tfhub_module.pb"


# F1: the files.


@check("F1")
def saved_model_files(ctx):
    """What every loader opens; a TF1 Hub module is named as such, with the fix."""
    path = ctx.path
    where = "pass the directory that holds saved_model.pb and variables/"
    if not os.path.exists(path):
        yield error(f"{path} does not exist", where)
        return
    if not os.path.isdir(path):
        yield error(f"{path} is a file, not a SavedModel directory", where)
        return
    if os.path.exists(os.path.join(path, TF1_HUB_FILE)):
        yield error(
            f"{TF1_HUB_FILE} marks the obsolete TF1 Hub format, which TF2 cannot "
            "fine-tune (hub.KerasLayer refuses trainable=True) and Keras 3 cannot use",
            "re-export the model in the TF2 SavedModel format, e.g. with "
            "`hubexport export`",
        )
    if not os.path.isfile(os.path.join(path, graph_scan.SAVED_MODEL_FILE)):
        found = ", ".join(sorted(os.listdir(path))) or "nothing"
        yield error(f"saved_model.pb is missing (the directory holds {found})", where)
    if not os.path.isdir(os.path.join(path, "variables")):
        yield error(
            "variables/ is missing, so the weights cannot be restored",
            "copy the whole SavedModel directory, including variables/",
        )


@check("F1")
def tf2_saved_model(ctx):
    """Only a TF2 SavedModel has the object graph behind obj.__call__ and friends."""
    if not os.path.isfile(os.path.join(ctx.path, graph_scan.SAVED_MODEL_FILE)):
        raise Skip("there is no saved_model.pb (see saved_model_files)")
    try:
        proto = ctx.raw_proto()
    except Exception as e:
        yield error(
            f"saved_model.pb is not a SavedModel protocol buffer: "
            f"{type(e).__name__}: {summarize(e)}",
            "the file is truncated or not a SavedModel; export or copy it again",
        )
        return
    problem = tf2_problem(proto)
    if problem:
        yield error(*problem)


# F2: no effects outside the model.


@check("F2")
def no_unsafe_ops(ctx):
    """Read before anything runs: loading or calling a SavedModel runs its graph.

    Every op of every graph and function must be on hubexport/check/ops.toml's
    list of reviewed ops (graph_scan); any other is an error.
    """
    scan = ctx.scan()
    level = warning if ctx.allow_unsafe_ops else error
    for hit in scan.hits:
        yield level(
            hit.describe(),
            "export with standard TensorFlow ops that touch only the model (no file, "
            "network, dataset, py_function or custom ops); check a model you trust "
            "anyway with --allow_unsafe_ops",
        )
    if scan.hits and ctx.allow_unsafe_ops:
        yield warning(
            f"loaded and called anyway, as --allow_unsafe_ops asks, with "
            f"{count(len(scan.hits), 'op')} not known to be safe"
        )
    if not scan.hits:
        yield info(
            f"every op of the {scan.functions_scanned} functions and the main graph "
            "is on the list of reviewed ops"
        )
