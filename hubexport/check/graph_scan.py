"""Finds ops that could act outside the model by reading saved_model.pb (F2).

A SavedModel is a program, and loading or calling it runs that program, so the
scan reads the protocol buffer and never loads or executes anything.

An op is unsafe until shown safe. Every node of every meta graph's main graph
and of every function in its library is checked, whether or not anything we
know of reaches it, against hubexport/check/ops.toml: the groups of ops reviewed as
pure or as touching only the model's own state. Every other op is a Hit: one
the list refuses (with its reason), one this TensorFlow registers but nobody
reviewed (an extension library's), one it does not register at all.

The checkpoint ops are the one exception, and only where the saver runs them:
SaveV2 and MergeV2Checkpoints in a function that only the saver's save tensor
calls, and RestoreV2 in a function that only its restore op calls, reading the
file prefix the loader feeds (the saver's filename tensor). Anywhere else,
including any other op inside the saver's functions, the rules are the same.

Each Hit also says what a consumer runs that reaches it (obj.__call__, a
signature as TF Serving runs it, the saver's restore op, a gradient...), or
that nothing reaches it: it is refused all the same.
"""

import dataclasses
import functools
import os
import tomllib

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

SAVED_MODEL_FILE = "saved_model.pb"
OPS_FILE = os.path.join(os.path.dirname(__file__), "ops.toml")
_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
UNREACHED = "nothing a load or call runs"


@dataclasses.dataclass(frozen=True)
class Policy:
    """hubexport/check/ops.toml: op -> group for the allowed, op -> reason for the refused."""

    allowed: dict
    refused: dict
    save: frozenset  # Allowed only in the saver's save function.
    restore: frozenset  # Allowed only in the saver's restore function.


@functools.cache
def policy():
    with open(OPS_FILE, "rb") as f:
        data = tomllib.load(f)
    allowed = {op: g["group"] for g in data["allow"] for op in g["ops"]}
    refused = {op: g["reason"] for g in data["refuse"] for op in g["ops"]}
    saver = data["saver"]
    return Policy(allowed, refused, frozenset(saver["save"]), frozenset(saver["restore"]))


@dataclasses.dataclass(frozen=True)
class Hit:
    """One op that is not known to be safe."""

    op: str
    node: str
    function: str  # The library function holding the node; "" for the main graph.
    reason: str
    entry: str  # What a consumer runs that reaches it, e.g. "obj.__call__".

    def describe(self):
        where = f"function {self.function}" if self.function else "the main graph"
        return (
            f"op {self.op} (node {self.node!r} in {where}, reached from "
            f"{self.entry}) {self.reason}"
        )


@dataclasses.dataclass(frozen=True)
class Scan:
    hits: tuple  # of Hit
    functions_scanned: int


def read(path):
    """The parsed saved_model.pb of the directory `path`.

    Raises OSError if it cannot be read, and google.protobuf's DecodeError if
    it is not a SavedModel protocol buffer.
    """
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def scan(proto):
    """Checks every node of every graph and function of `proto`; returns a Scan."""
    hits, scanned = [], 0
    for meta_graph in proto.meta_graphs:
        tags = ",".join(meta_graph.meta_info_def.tags)
        prefix = f"[tags {tags}] " if len(proto.meta_graphs) > 1 else ""
        graph = _Graph(meta_graph, prefix)
        hits.extend(graph.hits())
        scanned += len(graph.functions)
    return Scan(tuple(hits), scanned)


class _Graph:
    """One meta graph: who reaches what, and which nodes the saver alone runs."""

    def __init__(self, meta_graph, prefix):
        graph_def = meta_graph.graph_def
        self.functions = {f.signature.name: f for f in graph_def.library.function}
        self.gradients = {g.function_name: g.gradient_func for g in graph_def.library.gradient}
        self.nodes = {n.name: n for n in graph_def.node}
        self.entry_of = {}  # function name or ("node", name) -> the first entry reaching it
        reached_by_others = set()
        for label, functions, nodes, is_saver in _entries(meta_graph):
            # What others reach was labelled already, and so was all it calls.
            reached = set().union(*self._reach(functions, nodes, reached_by_others))
            for key in reached:
                self.entry_of.setdefault(key, prefix + label)
            if not is_saver:
                reached_by_others |= reached
        saver = meta_graph.saver_def
        self.filename = _node_name(saver.filename_tensor_name)
        save = self._saver_part(saver.save_tensor_name, reached_by_others)
        restore = self._saver_part(saver.restore_op_name, reached_by_others)
        # A load runs the restore op: it must not run the save function too.
        self.save_only, self.restore_only = save - restore, restore - save

    def _reach(self, functions, node_names, known=frozenset()):
        """(functions, main-graph node keys) that running the roots can run,
        not following what is in `known`."""
        nodes, pending = set(), [_node_name(n) for n in node_names]
        calls = list(functions)
        while pending:
            name = pending.pop()
            key = ("node", name)
            if key in nodes or key in known or name not in self.nodes:
                continue
            nodes.add(key)
            pending.extend(_node_name(i) for i in self.nodes[name].input)
            calls.extend(self._callees(self.nodes[name]))
        reached = set()
        while calls:
            name = calls.pop()
            if name in reached or name in known or name not in self.functions:
                continue
            reached.add(name)
            if name in self.gradients:
                calls.append(self.gradients[name])
            for node in self.functions[name].node_def:
                calls.extend(self._callees(node))
        return reached, nodes

    def _saver_part(self, tensor_name, reached_by_others):
        """The main-graph nodes the saver's node runs, and the function it calls
        with the filename tensor as first argument, that nothing else reaches."""
        if not tensor_name or _node_name(tensor_name) not in self.nodes:
            return frozenset()
        node = self.nodes[_node_name(tensor_name)]
        _, nodes = self._reach((), [node.name])
        fed = bool(node.input) and _node_name(node.input[0]) == self.filename
        direct = set(self._callees(node)) if node.op in _CALLS and fed else set()
        return frozenset((direct | nodes) - reached_by_others)

    def _callees(self, node):
        """Functions a node calls: by op name, or in function-valued attrs."""
        if node.op in self.functions:
            yield node.op
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            if value.HasField("list"):
                yield from (f.name for f in value.list.func)

    def hits(self):
        for node in self.nodes.values():
            yield from self._inspect(node, "", ("node", node.name))
        for name, function in self.functions.items():
            for node in function.node_def:
                yield from self._inspect(node, name, name, function)

    def _inspect(self, node, function_name, key, function=None):
        if node.op in self.functions:
            return  # A call by name: the function is checked itself.
        reason = _refusal(node, policy())
        if reason and self._saver_may_run(node, key, function):
            return
        if reason:
            entry = self.entry_of.get(key, UNREACHED)
            yield Hit(node.op, node.name, function_name, reason, entry)

    def _saver_may_run(self, node, key, function):
        ops = policy()
        if node.op in ops.save:
            return key in self.save_only
        if node.op in ops.restore and key in self.restore_only:
            # The file prefix the loader feeds: the saver's filename tensor in
            # the main graph, the restore function's first argument in a function.
            prefix = _node_name(node.input[0]) if node.input else None
            if function is None:
                return prefix == self.filename
            arguments = function.signature.input_arg
            return bool(arguments) and prefix == arguments[0].name
        return False


def _entries(meta_graph):
    """(label, functions, main-graph nodes, is the saver's) for what a consumer runs."""
    object_graph = meta_graph.object_graph_def
    paths = _object_paths(object_graph)
    for node_id, node in enumerate(object_graph.nodes):
        label = paths.get(node_id, f"object graph node {node_id}")
        for name in _object_functions(node):
            yield label, (name,), (), False
    for gradient in meta_graph.graph_def.library.registered_gradients:
        yield (f"the gradient of {gradient.registered_op_type}",
               (gradient.gradient_func,), (), False)
    for name in object_graph.concrete_functions:
        yield f"restored concrete function {name}", (name,), (), False
    for key, signature in meta_graph.signature_def.items():
        tensors = list(signature.inputs.values()) + list(signature.outputs.values())
        yield (f"signature {key!r} as TF Serving runs it", (),
               [t.name for t in tensors if t.name], False)
    for key in ("saved_model_main_op", "legacy_init_op", "table_initializer"):
        if key in meta_graph.collection_def:
            nodes = meta_graph.collection_def[key].node_list.value
            yield f"the {key} collection", (), nodes, False
    saver = meta_graph.saver_def
    for label, tensor in (("the saver's restore op", saver.restore_op_name),
                          ("the saver's save tensor", saver.save_tensor_name)):
        if tensor:
            yield label, (), (tensor,), True


def _refusal(node, ops):
    """Why `node` is not known to be safe, or None."""
    if node.op == "PrintV2":
        stream = node.attr["output_stream"].s.decode("utf-8", "replace")
        if stream.startswith("file://"):
            return f"prints to the file {stream[len('file://'):]}"
    if node.op in ops.allowed:
        return None
    if node.op in ops.refused:
        return ops.refused[node.op]
    if node.op in ops.save | ops.restore:
        return "reads or writes a checkpoint outside the saver's own functions"
    if op_def_registry.get(node.op) is None:
        return ("is not registered in this TensorFlow (a custom op?): what it does "
                "cannot be judged")
    return ("is not on hubexport's list of reviewed ops (hubexport/check/ops.toml): an op "
            "registered outside TensorFlow (by an extension library?) is unsafe until reviewed")


def _object_functions(node):
    kind = node.WhichOneof("kind")
    if kind == "function":
        return list(node.function.concrete_functions)
    if kind == "bare_concrete_function":
        return [node.bare_concrete_function.concrete_function_name]
    return []


def _object_paths(object_graph):
    """Node id -> "obj.attr.attr", breadth first from the root."""
    if not object_graph.nodes:
        return {}
    paths, queue = {0: "obj"}, [0]
    for node_id in queue:
        for child in object_graph.nodes[node_id].children:
            if child.node_id not in paths and child.node_id < len(object_graph.nodes):
                paths[child.node_id] = f"{paths[node_id]}.{child.local_name}"
                queue.append(child.node_id)
    return paths


def _node_name(tensor_name):
    """"^node", "node:1" and "node" all name the node "node"."""
    return tensor_name.lstrip("^").split(":")[0]
