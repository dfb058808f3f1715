"""Finds ops with effects outside the model by reading saved_model.pb (F2).

A SavedModel is a program, and loading or calling it runs that program, so the
scan reads the protocol buffer and never loads or executes anything.

It follows what a consumer would run, not function names:

  * every concrete function of the object graph (`obj.__call__`, `obj.serve`,
    the signatures, resource initializers such as a table's `_initialize`),
    which is what `tf.saved_model.load` restores and a call can run;
  * the nodes of the graph that TF1 loaders and TF Serving run: the inputs of
    every signature, the init ops, and the restore op of the saver;
  * registered gradient functions, which run when a caller differentiates;

and from there every function named by a function-valued attribute (e.g. `f`
of PartitionedCall, `body` of While, the map function of a dataset) or called
by name. Every SavedModel also holds `__inference__traced_save_*` and
`*_traced_restore_*` functions with SaveV2 and RestoreV2: only the restore op
of the saver legitimately reads the checkpoint, so checkpoint ops are allowed
there and nowhere else, and the save function, which no load or call reaches,
is not scanned at all.
"""

import dataclasses
import os

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

SAVED_MODEL_FILE = "saved_model.pb"

_CHECKPOINT_IO = (
    "Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints", "Restore", "RestoreV2",
    "RestoreSlice", "DTensorRestoreV2",
)
_RESTORE_OPS = frozenset(("Restore", "RestoreV2", "RestoreSlice", "DTensorRestoreV2"))

_REASONS = {
    "reads or writes files": (
        "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
        "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
        "LoadAndRemapMatrix", "GenerateVocabRemapping", "RecordInput",
        "FileSystemSetConfiguration", "CalibrationStatisticsSaver",
    ) + _CHECKPOINT_IO,
    "reads files through a reader or dataset": (
        "TFRecordReader", "TFRecordReaderV2", "TextLineReader", "TextLineReaderV2",
        "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "WholeFileReader",
        "WholeFileReaderV2", "LMDBReader", "TFRecordDataset", "TFRecordDatasetV2",
        "TextLineDataset", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
        "LMDBDataset", "ExperimentalLMDBDataset", "CSVDataset", "CSVDatasetV2",
        "ExperimentalCSVDataset", "SqlDataset", "ExperimentalSqlDataset",
        "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "LoadDataset",
        "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
        "SnapshotChunkDataset", "ListSnapshotChunksDataset",
    ),
    "writes files through a dataset": (
        "SaveDataset", "SaveDatasetV2", "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord", "SnapshotDataset", "SnapshotDatasetV2",
        "CacheDataset", "CacheDatasetV2", "DistributedSave",
    ),
    "writes summaries to files or a database": (
        "CreateSummaryFileWriter", "CreateSummaryDbWriter", "SummaryWriter",
        "WriteSummary", "WriteScalarSummary", "WriteHistogramSummary",
        "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
        "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
        "CloseSummaryWriter", "StatsAggregatorSetSummaryWriter",
    ),
    "runs arbitrary Python code": ("PyFunc", "PyFuncStateless", "EagerPyFunc"),
    "dumps tensors for the debugger to files or the network": (
        "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
        "DebugNumericSummary",
    ),
    "talks to the network": (
        "RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister",
        "RpcCheckStatus", "RpcGetValue", "DeleteRpcFutureResource",
        "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
        "DataServiceDatasetV4", "RegisterDataset",
    ),
}
UNSAFE_OPS = {op: reason for reason, ops in _REASONS.items() for op in ops}


@dataclasses.dataclass(frozen=True)
class Hit:
    """One op that would touch files, processes or the network."""

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
    unknown_ops: tuple  # op names this TensorFlow does not register
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
    """Scans every meta graph of `proto` (a SavedModel message); returns a Scan."""
    hits, unknown, scanned = {}, set(), set()
    for meta_graph in proto.meta_graphs:
        tags = ",".join(meta_graph.meta_info_def.tags)
        prefix = f"[tags {tags}] " if len(proto.meta_graphs) > 1 else ""
        walker = _Walker(meta_graph.graph_def)
        for entry, allowed, roots in _entries(meta_graph):
            for hit in walker.walk(prefix + entry, allowed, *roots):
                hits.setdefault((hit.function, hit.node), hit)
        unknown |= walker.unknown_ops
        scanned |= walker.scanned
    return Scan(tuple(hits.values()), tuple(sorted(unknown)), len(scanned))


def _entries(meta_graph):
    """(label, allowed ops, (functions, main-graph nodes)) a consumer runs."""
    object_graph = meta_graph.object_graph_def
    paths = _object_paths(object_graph)
    for node_id, node in enumerate(object_graph.nodes):
        label = paths.get(node_id, f"object graph node {node_id}")
        for name in _object_functions(node):
            yield label, frozenset(), ((name,), ())
    for name in object_graph.concrete_functions:
        yield f"restored concrete function {name}", frozenset(), ((name,), ())
    for gradient in meta_graph.graph_def.library.registered_gradients:
        yield (
            f"the gradient of {gradient.registered_op_type}",
            frozenset(),
            ((gradient.gradient_func,), ()),
        )
    for key, signature in meta_graph.signature_def.items():
        tensors = list(signature.inputs.values()) + list(signature.outputs.values())
        nodes = [t.name for t in tensors if t.name]
        yield f"signature {key!r} as TF Serving runs it", frozenset(), ((), nodes)
    for key in ("saved_model_main_op", "legacy_init_op", "table_initializer"):
        if key in meta_graph.collection_def:
            nodes = meta_graph.collection_def[key].node_list.value
            yield f"the {key} collection", frozenset(), ((), nodes)
    restore = meta_graph.saver_def.restore_op_name
    if restore:
        yield "the saver's restore op", _RESTORE_OPS, ((), (restore,))


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


class _Walker:
    """Walks a GraphDef's main graph and function library from given roots."""

    def __init__(self, graph_def):
        self.functions = {f.signature.name: f for f in graph_def.library.function}
        self.gradients = {g.function_name: g.gradient_func for g in graph_def.library.gradient}
        self.main_nodes = {n.name: n for n in graph_def.node}
        self.unknown_ops = set()
        self.scanned = set()
        self._visited = {}  # allowed ops -> functions already walked with them


    def walk(self, entry, allowed, functions, node_names):
        """Yields a Hit for every unsafe op reachable from the roots."""
        pending = list(functions)
        for node in self._main_graph_closure(node_names):
            yield from self._inspect(node, "", entry, allowed)
            pending.extend(self._callees(node))
        # A function walked before under the same rules gave its hits already.
        seen = self._visited.setdefault(allowed, set())
        while pending:
            name = pending.pop()
            if name in seen or name not in self.functions:
                continue
            seen.add(name)
            self.scanned.add(name)
            if name in self.gradients:
                pending.append(self.gradients[name])
            for node in self.functions[name].node_def:
                yield from self._inspect(node, name, entry, allowed)
                pending.extend(self._callees(node))

    def _main_graph_closure(self, names):
        """The main-graph nodes that running `names` runs (inputs, transitively)."""
        pending = [_node_name(n) for n in names]
        seen = set()
        while pending:
            name = pending.pop()
            if name in seen or name not in self.main_nodes:
                continue
            seen.add(name)
            node = self.main_nodes[name]
            pending.extend(_node_name(i) for i in node.input)
            yield node

    def _inspect(self, node, function, entry, allowed):
        if node.op in self.functions:
            return
        reason = _unsafe_reason(node)
        if reason and node.op not in allowed:
            yield Hit(node.op, node.name, function, reason, entry)
        elif op_def_registry.get(node.op) is None:
            self.unknown_ops.add(node.op)

    def _callees(self, node):
        """Functions a node calls: by op name, or in function-valued attrs."""
        if node.op in self.functions:
            yield node.op
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            if value.HasField("list"):
                yield from (f.name for f in value.list.func)


def _unsafe_reason(node):
    """Why `node` touches the world outside the model, or None."""
    if node.op == "PrintV2":
        stream = node.attr["output_stream"].s.decode("utf-8", "replace")
        return f"prints to the file {stream[len('file://'):]}" if stream.startswith(
            "file://") else None
    if node.op in ("DecodeProtoV2", "EncodeProto"):
        source = node.attr["descriptor_source"].s.decode("utf-8", "replace")
        if source not in ("", "local://"):
            return f"reads proto descriptors from the file {source}"
        return None
    return UNSAFE_OPS.get(node.op)


def _node_name(tensor_name):
    """"^node", "node:1" and "node" all name the node "node"."""
    return tensor_name.lstrip("^").split(":")[0]
