"""SavedModels that hide an op with effects outside the model, one per path.

Each builder takes the directory to write and a `canary` path: the file the
hidden op would write (or, for ops that read, would read) if anything ran
it. The roots are plain AutoTrackables with a scalar variable, so each builds
in about a second; what matters is where the op sits:

  call          in obj.__call__ itself
  nested        in a tf.function that __call__ calls
  while_body    in the body of a While loop
  case_branch   in a branch of a Case (a list(func) attribute)
  if_branch     in the else branch of an If
  gradient      in a custom gradient, saved as a registered gradient
  signature     in a signature that is no attribute of the root
  dataset       in the map function of a dataset that __call__ reduces
  graph_string  inside a serialized graph in a string constant (DatasetFromGraph)
  restore       in the saver's restore function (edited into the file)
  init_op       in the main graph's init op (edited into the file)
"""

import tensorflow as tf

from hubexport.check import graph_scan

SCALAR = tf.TensorSpec([], tf.float32)


def _root():
    root = tf.__internal__.tracking.AutoTrackable()
    root.v = tf.Variable(1.0)
    return root


def _write(canary, x):
    tf.io.write_file(canary, tf.strings.as_string(x))
    return tf.identity(x)


def _save(path, root, signatures=None, **options):
    tf.saved_model.save(root, path, signatures=signatures,
                        options=tf.saved_model.SaveOptions(**options))


def call(path, canary):
    root = _root()
    root.__call__ = tf.function(lambda x: _write(canary, x) * root.v,
                                input_signature=[SCALAR], autograph=False)
    _save(path, root)


def nested(path, canary):
    root = _root()
    leak = tf.function(lambda x: _write(canary, x), autograph=False)
    root.__call__ = tf.function(lambda x: leak(x) * root.v,
                                input_signature=[SCALAR], autograph=False)
    _save(path, root)


def while_body(path, canary):
    root = _root()

    def body(i, x):
        return i + 1, _write(canary, x)

    root.__call__ = tf.function(
        lambda x: tf.while_loop(lambda i, x: i < 2, body, (0, x))[1] * root.v,
        input_signature=[SCALAR], autograph=False)
    _save(path, root)


def case_branch(path, canary):
    root = _root()
    root.__call__ = tf.function(
        lambda x: tf.switch_case(tf.cast(x > 0, tf.int32),
                                 [lambda: x, lambda: _write(canary, x)]) * root.v,
        input_signature=[SCALAR], autograph=False)
    _save(path, root)


def if_branch(path, canary):
    root = _root()
    root.__call__ = tf.function(
        lambda x: tf.cond(x > 0, lambda: x, lambda: _write(canary, x)) * root.v,
        input_signature=[SCALAR], autograph=False)
    _save(path, root)


def gradient(path, canary):
    root = _root()

    @tf.custom_gradient
    def leaky_identity(x):
        return tf.identity(x), lambda dy: _write(canary, dy)

    root.__call__ = tf.function(lambda x: leaky_identity(x) * root.v,
                                input_signature=[SCALAR], autograph=False)
    _save(path, root, experimental_custom_gradients=True)


def signature(path, canary):
    root = _root()
    root.__call__ = tf.function(lambda x: x * root.v, input_signature=[SCALAR])
    serve = tf.function(lambda x: {"y": _write(canary, x) * root.v},
                        input_signature=[SCALAR], autograph=False)
    _save(path, root, signatures={"serving_default": serve})


def dataset(path, canary):
    root = _root()

    def call(x):
        written = tf.data.Dataset.from_tensors(x).map(lambda y: _write(canary, y))
        return written.reduce(0.0, lambda a, b: a + b) * root.v

    root.__call__ = tf.function(call, input_signature=[SCALAR], autograph=False)
    _save(path, root)


def graph_string(path, canary):
    """DatasetFromGraph runs a graph carried in a string: here one that writes."""
    hidden = tf.data.Dataset.from_tensors(1.0).map(lambda y: _write(canary, y))
    graph_def = tf.raw_ops.DatasetToGraphV2(input_dataset=hidden._variant_tensor).numpy()
    root = _root()
    root.graph = tf.Variable(graph_def)  # A constant would be folded, and fail.

    def call(x):
        variant = tf.raw_ops.DatasetFromGraph(graph_def=root.graph.read_value())
        ran = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.float32))
        return ran.reduce(x, lambda a, b: a + b) * root.v

    root.__call__ = tf.function(call, input_signature=[SCALAR], autograph=False)
    _save(path, root)


def _edit(path, edit):
    """Rewrites saved_model.pb after edit(meta_graph) changed it."""
    proto = graph_scan.read(path)
    edit(proto.meta_graphs[0])
    with open(f"{path}/{graph_scan.SAVED_MODEL_FILE}", "wb") as f:
        f.write(proto.SerializeToString())


def _add_write(nodes, canary, prefix, in_function):
    """Appends Const filename, Const contents and WriteFile to a node list."""
    for name, value in ((f"{prefix}_name", canary), (f"{prefix}_text", "leaked")):
        const = nodes.add(name=name, op="Const")
        const.attr["dtype"].type = tf.string.as_datatype_enum
        const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    output = ":output:0" if in_function else ""  # How a FunctionDef names outputs.
    return nodes.add(name=f"{prefix}_write", op="WriteFile",
                     input=[f"{prefix}_name{output}", f"{prefix}_text{output}"])


def _clean(path):
    root = _root()
    root.__call__ = tf.function(lambda x: x * root.v, input_signature=[SCALAR])
    _save(path, root)


def restore(path, canary):
    """The saver's restore function (TF Serving runs it at load) also writes."""
    _clean(path)

    def edit(meta_graph):
        (function,) = [f for f in meta_graph.graph_def.library.function
                       if "traced_restore" in f.signature.name]
        _add_write(function.node_def, canary, "leak", in_function=True)

    _edit(path, edit)


def init_op(path, canary):
    """A WriteFile in the main graph, run by the saved_model_main_op collection."""
    _clean(path)

    def edit(meta_graph):
        write = _add_write(meta_graph.graph_def.node, canary, "init_leak", in_function=False)
        meta_graph.collection_def["saved_model_main_op"].node_list.value[:] = [write.name]

    _edit(path, edit)


PATHS = {
    "call": call, "nested": nested, "while_body": while_body,
    "case_branch": case_branch, "if_branch": if_branch, "gradient": gradient,
    "signature": signature, "dataset": dataset, "graph_string": graph_string,
    "restore": restore, "init_op": init_op,
}
