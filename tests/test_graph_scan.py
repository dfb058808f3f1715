"""F2, as an attacker would try it: every path to a hidden op, and the op list.

Each SavedModel of unsafe_models hides a WriteFile (or an op that carries a
graph the scan cannot read) on one path a load or call can take. For each,
`hubexport check` must name the op, fail, and run nothing: the file the op
would write stays absent. The op list itself (hubexport/check/ops.toml) must cover
every op this TensorFlow registers, so an upgrade cannot widen the gate.
"""

import io

import pytest
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session

from hubexport import checker
from hubexport.check import graph_scan

import mutants
import unsafe_models

# The op each path hides, and what the finding must say reaches it.
EXPECTED = {
    "call": ("WriteFile", "obj.__call__"),
    "nested": ("WriteFile", "obj.__call__"),
    "while_body": ("WriteFile", "obj.__call__"),
    "case_branch": ("WriteFile", "obj.__call__"),
    "if_branch": ("WriteFile", "obj.__call__"),
    "gradient": ("WriteFile", "the gradient of"),
    "signature": ("WriteFile", "obj.signatures.serving_default"),
    "dataset": ("WriteFile", "obj.__call__"),
    "graph_string": ("DatasetFromGraph", "obj.__call__"),
    "restore": ("WriteFile", "the saver's restore op"),
    "init_op": ("WriteFile", "the saved_model_main_op collection"),
}


def registered_ops():
    buffer = pywrap_tf_session.TF_GetAllOpList()
    ops = op_def_pb2.OpList()
    ops.ParseFromString(pywrap_tf_session.TF_GetBuffer(buffer))
    return {op.name for op in ops.op}


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    """hidden(path_name) -> (model directory, canary path), built once."""
    root = tmp_path_factory.mktemp("unsafe")
    built = {}

    def build(name):
        if name not in built:
            canary = root / f"{name}.canary"
            unsafe_models.PATHS[name](str(root / name), str(canary))
            built[name] = (str(root / name), canary)
        return built[name]

    return build


def test_every_path_has_a_model():
    assert set(EXPECTED) == set(unsafe_models.PATHS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_scan_finds_the_op_on_every_path(name, hidden):
    path, _ = hidden(name)
    op, entry = EXPECTED[name]
    hits = graph_scan.scan(graph_scan.read(path)).hits
    assert any(h.op == op and h.entry.startswith(entry) for h in hits), [
        h.describe() for h in hits]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_fails_names_the_op_and_runs_nothing(name, hidden):
    path, canary = hidden(name)
    report = checker.check(path)
    assert report.fails()
    errors = [f.message for f in report.findings if f.level == "error"]
    assert any(m.startswith(f"op {EXPECTED[name][0]} ") for m in errors), errors
    (loads,) = [r for r in report.results if r.check == "loads"]
    assert "not loaded" in loads.findings[0].message
    assert not canary.exists()


def test_hubexport_check_exits_1_and_runs_nothing(hidden):
    path, canary = hidden("restore")
    out = io.StringIO()
    assert checker.run([path], out=out) == 1
    assert "error F2 no_unsafe_ops: op WriteFile" in out.getvalue()
    assert not canary.exists()


def test_dataset_is_refused_and_its_function_scanned(hidden):
    path, _ = hidden("dataset")
    hits = graph_scan.scan(graph_scan.read(path)).hits
    reasons = {h.op: h.reason for h in hits}
    assert "tf.data" in reasons["ReduceDataset"]
    assert reasons["WriteFile"] == "reads or writes files"


def test_a_graph_in_a_string_is_refused_as_unreadable(hidden):
    path, _ = hidden("graph_string")
    hits = graph_scan.scan(graph_scan.read(path)).hits
    (hit,) = [h for h in hits if h.op == "DatasetFromGraph"]
    assert "serialized graph" in hit.reason


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The conforming model's directory."""
    path = str(tmp_path_factory.mktemp("good") / "model")
    mutants.good(path)
    return path


def _with_node(good, op, in_function=True, **attrs):
    """The good model's proto with one node of `op` added to the backbone's
    function (or to the main graph)."""
    proto = graph_scan.read(good)
    meta_graph = proto.meta_graphs[0]
    if in_function:
        nodes = next(f for f in meta_graph.graph_def.library.function
                     if "backbone" in f.signature.name).node_def
    else:
        nodes = meta_graph.graph_def.node
    node = nodes.add(name="injected", op=op)
    for key, value in attrs.items():
        node.attr[key].s = value
    return proto


def test_the_good_model_and_its_savers_pass(good):
    proto = graph_scan.read(good)
    ops = {n.op for f in proto.meta_graphs[0].graph_def.library.function for n in f.node_def}
    assert {"SaveV2", "MergeV2Checkpoints", "RestoreV2"} <= ops
    assert graph_scan.scan(proto).hits == ()


# Ops that a denylist missed: each has effects outside the model in TF 2.21.
@pytest.mark.parametrize("op", [
    "DumpTensor", "FixedUnigramCandidateSampler", "RegisterDatasetV2", "RemoteCall",
    "Send", "Recv", "_Send", "_Recv", "_HostSend", "_HostRecv", "CollectiveReduceV2",
    "XlaCallModule", "DatasetFromGraph", "ReadFile", "MatchingFiles", "WriteFile",
    "PyFunc", "ImmutableConst", "InitializeTableFromTextFileV2", "Abort",
    "FIFOQueueV2", "MlirPassthroughOp",
])
@pytest.mark.parametrize("in_function", [True, False])
def test_ops_with_outside_effects_are_hits_anywhere(good, op, in_function):
    hits = graph_scan.scan(_with_node(good, op, in_function)).hits
    assert [h.op for h in hits] == [op]
    assert ("backbone" in hits[0].function) if in_function else hits[0].function == ""


@pytest.mark.parametrize("op", ["SaveV2", "RestoreV2", "MergeV2Checkpoints"])
def test_checkpoint_ops_outside_the_saver_are_hits(good, op):
    hits = graph_scan.scan(_with_node(good, op)).hits
    assert [h.op for h in hits] == [op]
    assert "outside the saver's own functions" in hits[0].reason


def test_restore_reading_another_file_is_a_hit(good):
    proto = graph_scan.read(good)
    function = next(f for f in proto.meta_graphs[0].graph_def.library.function
                    if "traced_restore" in f.signature.name)
    const = function.node_def.add(name="elsewhere", op="Const")
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("/etc/passwd"))
    restore = next(n for n in function.node_def if n.op == "RestoreV2")
    restore.input[0] = "elsewhere:output:0"
    assert [h.op for h in graph_scan.scan(proto).hits] == ["RestoreV2"]


def test_save_ops_in_the_restore_function_are_hits(good):
    proto = graph_scan.read(good)
    function = next(f for f in proto.meta_graphs[0].graph_def.library.function
                    if "traced_restore" in f.signature.name)
    function.node_def.add(name="also_saves", op="SaveV2", input=["file_prefix"])
    assert [h.op for h in graph_scan.scan(proto).hits] == ["SaveV2"]


def test_a_function_nothing_calls_is_scanned_too(good):
    proto = graph_scan.read(good)
    library = proto.meta_graphs[0].graph_def.library
    orphan = library.function.add()
    orphan.signature.name = "orphan"
    orphan.node_def.add(name="w", op="WriteFile")
    (hit,) = graph_scan.scan(proto).hits
    assert (hit.op, hit.function, hit.entry) == ("WriteFile", "orphan", graph_scan.UNREACHED)


def test_unregistered_and_unreviewed_ops_are_hits(good, monkeypatch):
    (hit,) = graph_scan.scan(_with_node(good, "ZzCustomOp")).hits
    assert "not registered in this TensorFlow" in hit.reason
    policy = graph_scan.policy()
    allowed = {op: g for op, g in policy.allowed.items() if op != "Conv2D"}
    monkeypatch.setattr(graph_scan, "policy",
                        lambda: graph_scan.Policy(allowed, policy.refused, policy.save,
                                                  policy.restore))
    hits = graph_scan.scan(graph_scan.read(good)).hits
    assert {h.op for h in hits} == {"Conv2D"}
    assert "not on hubexport's list of reviewed ops" in hits[0].reason


def test_print_to_a_file_is_a_hit_and_to_stderr_is_not(good):
    (hit,) = graph_scan.scan(_with_node(good, "PrintV2", output_stream=b"file:///tmp/x")).hits
    assert "prints to the file /tmp/x" in hit.reason
    assert graph_scan.scan(_with_node(good, "PrintV2", output_stream=b"stderr")).hits == ()


def test_every_registered_op_is_allowed_or_refused_once():
    policy = graph_scan.policy()
    allowed = set(policy.allowed) | policy.save | policy.restore
    refused = set(policy.refused)
    assert not allowed & refused
    unlisted = sorted(registered_ops() - allowed - refused)
    assert not unlisted, (
        f"this TensorFlow registers {len(unlisted)} ops that {graph_scan.OPS_FILE} "
        f"neither allows nor refuses: {unlisted[:20]}; review each and add it to a group")


def test_refused_groups_include_the_effects_the_contract_names():
    refused = graph_scan.policy().refused
    for op, words in [("WriteFile", "files"), ("PyFunc", "Python"),
                      ("RpcCall", "hosts"), ("DatasetFromGraph", "serialized")]:
        assert words in refused[op]


def _run_it(name, obj):
    """What makes the hidden op of `name` run, once the model is loaded."""
    x = tf.constant(-1.0 if name == "if_branch" else 1.0)
    if name == "signature":
        return obj.signatures["serving_default"](x=x)
    if name == "gradient":
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = obj(x)
        return tape.gradient(y, x)
    return obj(x)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"restore", "init_op"}))
def test_the_canary_is_written_when_the_op_runs(name, hidden, tmp_path):
    """The models are what they claim: loaded and run, each writes its canary.

    (So a canary left absent above shows that the check ran nothing.)
    """
    import shutil

    path, canary = hidden(name)
    copy = str(tmp_path / "copy")
    shutil.copytree(path, copy)
    _run_it(name, tf.saved_model.load(copy))
    assert canary.exists()
    canary.unlink()


def test_a_restore_op_that_runs_the_save_function_is_a_hit(good):
    """TF Serving runs the restore op at load: pointed at the save function,
    it would write files, so its checkpoint ops do not pass (nor do those of
    the restore function, which nothing calls any more)."""
    proto = graph_scan.read(good)
    meta_graph = proto.meta_graphs[0]
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    save = nodes[meta_graph.saver_def.save_tensor_name.split(":")[0]]
    restore = nodes[meta_graph.saver_def.restore_op_name]
    restore.attr["f"].func.name = save.attr["f"].func.name
    assert {h.op for h in graph_scan.scan(proto).hits} == {"SaveV2", "MergeV2Checkpoints",
                                                           "RestoreV2"}
