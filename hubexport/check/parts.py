"""What the Context and the checks of several clause groups read from a SavedModel.

Its MetaGraph, its restored functions and listed variables, the specs its
functions are traced for, its regularization losses; and how findings count
and name variables.
"""

import collections.abc

import tensorflow as tf

from hubexport import contract
from hubexport.errors import summarize

# The root's functions that every export has (obj.top_k, with labels, is the
# top_k signature's, found there).
ROOT_FUNCTIONS = tuple(row.name for row in contract.ENDPOINTS
                       if row.kind == contract.FUNCTION and row.present == contract.ALWAYS)


def training_values(traces):
    """The values of `training` that some trace covers (a bool tensor: both)."""
    values = set()
    for trace in traces:
        value = trace.get("training")
        if isinstance(value, tf.TensorSpec) and value.dtype == tf.bool:
            values |= {False, True}
        elif isinstance(value, bool):
            values.add(value)
    return values


def serving_meta_graph(proto):
    """The MetaGraph tf.saved_model.load picks: the only one, or tagged "serve"."""
    if len(proto.meta_graphs) == 1:
        return proto.meta_graphs[0]
    for meta_graph in proto.meta_graphs:
        if list(meta_graph.meta_info_def.tags) == ["serve"]:
            return meta_graph
    return None


def tf2_problem(proto):
    """(message, hint) if `proto` is not a TF2 SavedModel, else None."""
    resave = (
        "re-export it with TF2's tf.saved_model.save of a reusable root "
        "(as `hubexport export` writes)"
    )
    if not proto.meta_graphs:
        return "saved_model.pb holds no MetaGraph", resave
    meta_graph = serving_meta_graph(proto)
    if meta_graph is None:
        tags = [list(m.meta_info_def.tags) for m in proto.meta_graphs]
        return (
            f"saved_model.pb holds {len(tags)} MetaGraphs tagged {tags} and none "
            "tagged only 'serve': a TF1 SavedModel",
            resave,
        )
    if not meta_graph.object_graph_def.nodes:
        return (
            "it is a TF1 SavedModel: it has no object graph, so "
            "tf.saved_model.load gives no __call__, variables or trainable_variables",
            resave,
        )
    return None


def restored_function(obj, name):
    fn = getattr(obj, name, None)
    if isinstance(fn, tf.types.experimental.PolymorphicFunction) and getattr(
        fn, "concrete_functions", None
    ):
        return fn
    return None


def endpoint_traces(obj):
    """(endpoint name, concrete function) for every endpoint of the root."""
    for name in ROOT_FUNCTIONS:
        fn = restored_function(obj, name)
        for concrete in fn.concrete_functions if fn else ():
            yield f"obj.{name}", concrete
    for key, concrete in getattr(obj, "signatures", {}).items():
        yield f"signature {key!r}", concrete


def listed_variables(obj, attribute):
    """(obj.<attribute> as a list of tf.Variables, None) or (None, what is wrong)."""
    if not hasattr(obj, attribute):
        return None, f"obj.{attribute} is missing"
    value = getattr(obj, attribute)
    if not isinstance(value, collections.abc.Sequence) or isinstance(value, str):
        return None, f"obj.{attribute} is a {type(value).__name__}, not a list"
    for index, item in enumerate(value):
        if not isinstance(item, tf.Variable):
            return None, (
                f"obj.{attribute}[{index}] is a {type(item).__name__}, not a tf.Variable"
            )
    return list(value), None


def count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def variable_names(variables, limit=8):
    names = [v.name for v in variables]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe_spec(spec):
    if not isinstance(spec, tf.TensorSpec):
        return repr(spec)
    shape = "?" if spec.shape.rank is None else spec.shape.as_list()
    return f"{spec.dtype.name} {shape}"


def image_spec_problems(spec, allow_unknown_channels=False):
    """What keeps `spec` from being C1's float32 [None, height, width, 3]."""
    if not isinstance(spec, tf.TensorSpec):
        return [f"images is traced as {spec!r}, not as a tensor"]
    problems = []
    if spec.dtype != tf.float32:
        problems.append(f"images are {spec.dtype.name}; expected float32 in [0, 1]")
    if spec.shape.rank != 4:
        problems.append(
            f"images have shape {describe_spec(spec)} (rank {spec.shape.rank}); "
            "expected rank 4: [batch, height, width, 3]"
        )
        return problems
    batch, channels = spec.shape[0], spec.shape[3]
    if batch is not None:
        problems.append(f"the batch size is fixed at {batch}; expected None (any)")
    if channels != 3 and not (allow_unknown_channels and channels is None):
        problems.append(
            f"the last dimension is {channels}; expected 3 (RGB, channels last)"
        )
    return problems


def loss_problem(loss):
    """What keeps `loss` from being a zero-argument function of a float scalar."""
    if not callable(loss):
        return f"is a {type(loss).__name__}, not callable"
    try:
        value = tf.convert_to_tensor(loss())
    except Exception as e:
        return f"cannot be called without arguments: {type(e).__name__}: {summarize(e)}"
    if not value.dtype.is_floating or value.shape.rank != 0:
        return f"returns {value.dtype.name} {value.shape}; expected a float scalar"
    return None
