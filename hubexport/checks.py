"""The checks of `hubexport check`, one small function per property.

Each check is registered with the clause of HUB_CONTRACT.md it verifies and
yields Findings (error, warning or info); yielding nothing means it passed.
Checks share one Context, which reads, scans and loads the model at most once
and refuses to load it at all when the F2 scan found unsafe ops. A check states
its preconditions by asking the Context for what it needs: when that is
unavailable (the model did not load, __call__ is missing...) the Context raises
Skip naming the check that explains why, and the runner reports the check as
skipped.

Calls use small batches of images uniform in [0, 1) at the signature's fixed
height and width, else at the provenance image_size, else at 224; steps that
differentiate the model take fewer as images grow (checker.gradient_batch).
"""

import collections.abc
import contextlib
import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf

from hubexport import export
from hubexport import graph_scan, serving
from hubexport.checker import BATCH, gradient_batch
from hubexport import labels as labels_lib
from hubexport.errors import summarize
from hubexport.reports import Finding
from hubexport.reusable import OUTPUT_KEYS, unique_by_identity

DEFAULT_SIZE = 224  # Height and width for free-size models without provenance.
DEFAULT_MIN_SIZE = 32  # Smallest size tried when the provenance gives none.
DETERMINISM_TOLERANCE = 1e-6  # Relative; two identical calls.
BATCH_TOLERANCE = 1e-5  # Relative; one example alone vs. in a batch.
ENDPOINT_TOLERANCE = 1e-5  # Relative; two endpoints of one model on the same images.
MIN_VALUES_FOR_SIGMOID = 16  # Fewer values in [0, 1] may be chance.
SOFTMAX_SUM_TOLERANCE = 1e-3
SERVING_TOLERANCE = 1e-4  # Relative; serving_default vs. __call__ (the export's own).
MOMENTUM = "batch_norm_momentum"
MOMENTUM_PROBES = (0.0, 0.5)  # Far from 1, so the moving means move far.
MOMENTUM_RATIO_TOLERANCE = 0.05  # Of the median ratio of two moves; see _momentum_findings.
SECOND_SIZE_BATCH = 2  # Images per call at the second size.
FINE_TUNING_LEARNING_RATE = 0.5  # High, so one step moves every weight.
TF1_HUB_FILE = "tfhub_module.pb"


class Skip(BaseException):
    """A precondition of a check is missing; the message says which and why.

    A BaseException (as pytest's skip is), so that the `except Exception`
    around a model call inside a check cannot mistake it for the call failing.
    """


class Unavailable(Skip):
    """What the check needs is missing from this environment, not from the model
    (e.g. tensorflow_hub fails to import): the check could not run, which is
    not a pass. Reported as "unavailable"; --strict fails on it.
    """


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    clause: str
    function: object  # Context -> iterable of Finding


CHECKS = []


def check(clause):
    """Registers the decorated generator as the check of `clause` it names."""

    def register(function):
        CHECKS.append(Check(function.__name__, clause, function))
        return function

    return register


def error(message, hint=""):
    return Finding("", "", "error", message, hint)


def warning(message, hint=""):
    return Finding("", "", "warning", message, hint)


def info(message):
    return Finding("", "", "info", message)


class Context:
    """What the checks of one model share, each computed at most once."""

    def __init__(self, path, task, allow_unsafe_ops, loaded=None):
        self.path = path
        self.allow_unsafe_ops = allow_unsafe_ops
        self._loaded = loaded  # What tf.saved_model.load(path) gave already.
        provenance = export.read_provenance(path) if os.path.isdir(path) else None
        self.provenance = provenance if isinstance(provenance, dict) else {}
        self._memo = {}
        self.task, self.task_source = self._resolve_task(task)

    def _once(self, key, compute):
        """compute() on the first call; later calls give its value or raise its error."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as e:  # Kept and re-raised to every caller.
                self._memo[key] = (False, e)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    def _resolve_task(self, requested):
        if requested != "auto":
            return requested, "as requested"
        task = self.provenance.get("task")
        if task in OUTPUT_KEYS:
            return task, f"from {export.PROVENANCE_FILE}"
        keys = self._serving_output_keys()
        for task, key in OUTPUT_KEYS.items():
            if key in keys:
                return task, f"inferred from the serving_default output key {key!r}"
        return None, (
            "as there is no provenance file and no feature_vector or logits output "
            "in serving_default; pass --task"
        )

    def _serving_output_keys(self):
        try:
            meta_graph = self.meta_graph()
        except Skip:
            return set()
        signature = meta_graph.signature_def.get("serving_default")
        return set(signature.outputs) if signature else set()

    # The files.

    def raw_proto(self):
        """The parsed saved_model.pb; raises what reading or parsing raised."""
        return self._once("proto", lambda: graph_scan.read(self.path))

    def proto(self):
        try:
            return self.raw_proto()
        except Exception:
            raise Skip(
                "saved_model.pb is missing or unreadable "
                "(see saved_model_files, tf2_saved_model)"
            ) from None

    def meta_graph(self):
        """The MetaGraph a TF2 load uses; Skip unless it has an object graph."""
        proto = self.proto()
        if _tf2_problem(proto):
            raise Skip("not a TF2 SavedModel (see tf2_saved_model)")
        return _serving_meta_graph(proto)

    def scan(self):
        return self._once("scan", lambda: graph_scan.scan(self.proto()))

    # The root object.

    def load(self):
        """tf.saved_model.load(path), once, and only after a clean F2 scan."""
        self.meta_graph()
        try:
            hits = self.scan().hits
        except Exception:
            raise Skip(
                "not loaded: the F2 scan did not complete (see no_unsafe_ops), "
                "and a model that was not scanned is not run"
            ) from None
        if hits and not self.allow_unsafe_ops:
            raise Skip(
                "not loaded: it has ops not known to be safe (see no_unsafe_ops); "
                "pass --allow_unsafe_ops to load it anyway"
            )
        return self._once("model", lambda: self._loaded or tf.saved_model.load(self.path))

    def model(self):
        try:
            return self.load()
        except Exception:
            raise Skip("the model did not load (see loads)") from None

    def call_function(self):
        fn = _restored_function(self.model(), "__call__")
        if fn is None:
            raise Skip("obj.__call__ is not a restored tf.function (see restored_call)")
        return fn

    def call_arguments(self):
        """(names of __call__'s arguments, their defaults as a dict)."""
        spec = self.call_function().function_spec
        names = list(spec.fullargspec.args) + list(spec.fullargspec.kwonlyargs)
        return names, dict(spec.default_values)

    def traced_arguments(self):
        """For every trace of __call__, a dict of argument name -> traced value."""
        fn = self.call_function()
        names = list(fn.function_spec.fullargspec.args)
        traces = []
        for concrete in fn.concrete_functions:
            args, kwargs = concrete.structured_input_signature
            traces.append({**dict(zip(names, args)), **kwargs})
        return traces

    def image_spec(self):
        """The images TensorSpec of the first trace of __call__."""
        traces = self.traced_arguments()
        names, _ = self.call_arguments()
        if not traces or not names or names[0] not in traces[0]:
            raise Skip("__call__ has no traced images argument (see input_signature)")
        return traces[0][names[0]]

    def call_hw(self):
        return self.hw_for(self.image_spec(), "__call__", "input_signature")

    def hw_for(self, spec, endpoint, check_name):
        """The (height, width) to call `spec` with; Skip if it cannot take images."""
        if _image_spec_problems(spec, allow_unknown_channels=True):
            raise Skip(
                f"the images argument of {endpoint} is not float32 [batch, height, "
                f"width, 3] (see {check_name})"
            )
        size = self.provenance.get("image_size")
        if not isinstance(size, int) or size <= 0:
            size = DEFAULT_SIZE
        height, width = spec.shape[1], spec.shape[2]
        return (height or size, width or size)

    def has_free_hw(self):
        spec = self.image_spec()
        return spec.shape[1] is None and spec.shape[2] is None

    def second_hw(self):
        """A second size (>= the minimum) for free_size and feature_size_constant."""
        minimum = (self.provenance.get("input") or {}).get("min_size")
        if not isinstance(minimum, int) or minimum <= 0:
            minimum = DEFAULT_MIN_SIZE
        return tuple(_other_size(size, minimum) for size in self.call_hw())

    def second_size_output(self):
        """obj(images) at second_hw(), once: the numpy output, or what it raised."""
        self.reference_output()
        images = self.images(SECOND_SIZE_BATCH, self.second_hw())
        return self._once("second_size", lambda: self.call(images).numpy())

    def serving_default_output(self, signature):
        """(height and width, output key, numpy output) of `signature` (the
        serving_default) on images(): called once, raises what it raised."""
        spec = signature.structured_input_signature[1]["images"]
        hw = self.hw_for(spec, "serving_default", "serving_signature")
        images = tf.constant(self.images(hw=hw))

        def call():
            (key, value), = signature(images=images).items()
            return hw, key, value.numpy()

        return self._once("serving_default", call)

    def images(self, batch=BATCH, hw=None):
        height, width = hw or self.call_hw()
        rng = np.random.default_rng(0)
        return rng.uniform(0.0, 1.0, (batch, height, width, 3)).astype(np.float32)

    def gradient_images(self, hw=None):
        """images() for a step that differentiates the model: fewer when large."""
        height, width = hw or self.call_hw()
        return self.images(gradient_batch(height, width), (height, width))

    def accepts_training(self):
        names, _ = self.call_arguments()
        return "training" in names

    def call(self, images, **kwargs):
        """obj(images, training=False) (without `training` if it has none)."""
        if self.accepts_training():
            kwargs.setdefault("training", False)
        return self.call_function()(tf.constant(images), **kwargs)

    def raw_output(self):
        """obj(images) on self.images(), once: whatever it returns or raises."""
        return self._once("raw_output", lambda: self.call(self.images()))

    def reference_output(self):
        """raw_output() as a numpy array; Skip unless inference gives a tensor.

        A model whose inference fails is reported once, by output_tensor,
        rather than by every check that calls it.
        """
        try:
            output = self.raw_output()
        except Exception:
            raise Skip("obj(images) fails (see output_tensor)") from None
        if not tf.is_tensor(output):
            raise Skip("__call__ does not return one tensor (see output_tensor)")
        return output.numpy()

    def infer(self, images):
        """The inference output on `images`, once reference_output() works."""
        self.reference_output()
        return self.call(images).numpy()

    def determinism_difference(self):
        """Relative difference between two identical inference calls."""
        return self._once(
            "determinism",
            lambda: export.relative_difference(
                self.infer(self.images()), self.reference_output()
            ),
        )

    def require_training_trace(self):
        """Skip unless __call__ takes training=True (see training_argument)."""
        traced = _training_values(self.traced_arguments())
        if not self.accepts_training() or True not in traced:
            raise Skip("__call__ is not traced for training=True (see training_argument)")

    def training_call(self):
        """obj(gradient_images(), training=True) under a tape, once; raises what it raised.

        Called as fine-tuning calls it: TensorFlow then prepares the function
        it differentiates later (training_gradients, hub_fine_tuning) rather
        than another one for this call alone.
        """
        def call():
            with self.restoring_variables():
                with tf.GradientTape():
                    self.call(self.gradient_images(), training=True)

        return self._once("training_call", call)

    def require_training_call(self):
        """Skip unless obj(images, training=True) runs (see training_call)."""
        self.require_training_trace()
        try:
            self.training_call()
        except Exception:
            raise Skip("obj(images, training=True) fails (see training_call)") from None

    def used_variables(self):
        """(endpoint, variable) for every variable a restored endpoint captures."""
        obj = self.model()
        used, seen = [], set()
        for endpoint, concrete in _endpoint_traces(obj):
            for variable in concrete.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    used.append((endpoint, variable))
        return used

    def loaded_values(self):
        """(variable, value as loaded) for every variable of the model, once.

        The values alias the variables' buffers as loaded: TensorFlow copies a
        buffer that is still referenced before updating it in place.
        """
        def snapshot():
            listed, _ = _listed_variables(self.model(), "variables")
            used = [v for _, v in self.used_variables()]
            return [(v, v.numpy()) for v in unique_by_identity((listed or []) + used)]

        return self._once("loaded_values", snapshot)

    @contextlib.contextmanager
    def restoring_variables(self):
        """Undoes what a training call or a fit step does to the variables.

        Only the variables that changed are assigned again (a large model's
        weights are gigabytes, and a check changes a few or none of them).
        """
        saved = self.loaded_values()
        try:
            yield
        finally:
            for variable, value in saved:
                if not np.array_equal(variable.numpy(), value):
                    variable.assign(value)


def _training_values(traces):
    """The values of `training` that some trace covers (a bool tensor: both)."""
    values = set()
    for trace in traces:
        value = trace.get("training")
        if isinstance(value, tf.TensorSpec) and value.dtype == tf.bool:
            values |= {False, True}
        elif isinstance(value, bool):
            values.add(value)
    return values


def _other_size(size, minimum):
    smaller = max(minimum, size * 3 // 4)
    return smaller if smaller != size else size + 32


def _serving_meta_graph(proto):
    """The MetaGraph tf.saved_model.load picks: the only one, or tagged "serve"."""
    if len(proto.meta_graphs) == 1:
        return proto.meta_graphs[0]
    for meta_graph in proto.meta_graphs:
        if list(meta_graph.meta_info_def.tags) == ["serve"]:
            return meta_graph
    return None


def _tf2_problem(proto):
    """(message, hint) if `proto` is not a TF2 SavedModel, else None."""
    resave = (
        "re-export it with TF2's tf.saved_model.save of a reusable root "
        "(as `hubexport export` writes)"
    )
    if not proto.meta_graphs:
        return "saved_model.pb holds no MetaGraph", resave
    meta_graph = _serving_meta_graph(proto)
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


def _restored_function(obj, name):
    fn = getattr(obj, name, None)
    if isinstance(fn, tf.types.experimental.PolymorphicFunction) and getattr(
        fn, "concrete_functions", None
    ):
        return fn
    return None


def _endpoint_traces(obj):
    """(endpoint name, concrete function) for every endpoint of the root."""
    for name in ("__call__", "serve", "serve_training"):
        fn = _restored_function(obj, name)
        for concrete in fn.concrete_functions if fn else ():
            yield f"obj.{name}", concrete
    for key, concrete in getattr(obj, "signatures", {}).items():
        yield f"signature {key!r}", concrete


def _listed_variables(obj, attribute):
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


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _names(variables, limit=8):
    names = [v.name for v in variables]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _describe_spec(spec):
    if not isinstance(spec, tf.TensorSpec):
        return repr(spec)
    shape = "?" if spec.shape.rank is None else spec.shape.as_list()
    return f"{spec.dtype.name} {shape}"


def _image_spec_problems(spec, allow_unknown_channels=False):
    """What keeps `spec` from being C1's float32 [None, height, width, 3]."""
    if not isinstance(spec, tf.TensorSpec):
        return [f"images is traced as {spec!r}, not as a tensor"]
    problems = []
    if spec.dtype != tf.float32:
        problems.append(f"images are {spec.dtype.name}; expected float32 in [0, 1]")
    if spec.shape.rank != 4:
        problems.append(
            f"images have shape {_describe_spec(spec)} (rank {spec.shape.rank}); "
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
    problem = _tf2_problem(proto)
    if problem:
        yield error(*problem)


# F2: no effects outside the model.


@check("F2")
def no_unsafe_ops(ctx):
    """Read before anything runs: loading or calling a SavedModel runs its graph.

    Every op of every graph and function must be on hubexport/ops.toml's list
    of reviewed ops (hubexport.graph_scan); any other is an error.
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
            f"{_count(len(scan.hits), 'op')} not known to be safe"
        )
    if not scan.hits:
        yield info(
            f"every op of the {scan.functions_scanned} functions and the main graph "
            "is on the list of reviewed ops"
        )


# R1-R4: the root object.


@check("R1")
def loads(ctx):
    """Every clause below is about the object that tf.saved_model.load returns."""
    try:
        ctx.load()
    except Exception as e:
        yield error(
            f"tf.saved_model.load failed: {type(e).__name__}: {summarize(e)}",
            "export the model again; check that variables/ is complete",
        )


@check("R1")
def restored_call(ctx):
    """hub.KerasLayer and direct callers need obj(images) to be a tf.function."""
    obj = ctx.model()
    fn = getattr(obj, "__call__", None)
    if _restored_function(obj, "__call__") is not None:
        return
    signatures = sorted(getattr(obj, "signatures", {}))
    what = "missing" if fn is None else f"a {type(fn).__name__}, not a restored tf.function"
    yield error(
        f"obj.__call__ is {what} (the model has the signatures {signatures})",
        "save a root object whose __call__ is a tf.function traced for "
        "training=False and True (see hubexport.reusable.make_root); a Keras model "
        "saved with tf.saved_model.save or model.export() has none",
    )


@check("R2")
def variables(ctx):
    """Consumers track obj.variables; a variable missing there is not saved with them."""
    obj = ctx.model()
    listed, problem = _listed_variables(obj, "variables")
    if problem:
        yield error(problem, "set root.variables to the list of every variable")
        return
    listed_ids = {id(v) for v in listed}
    missing = collections.defaultdict(list)
    for endpoint, variable in ctx.used_variables():
        if id(variable) not in listed_ids:
            missing[endpoint].append(variable)
    for endpoint, unlisted in missing.items():
        yield error(
            f"{endpoint} uses {_count(len(unlisted), 'variable')} missing from "
            "obj.variables: "
            f"{_names(unlisted)}",
            "list every variable that any traced call captures in root.variables",
        )


@check("R3")
def trainable_variables(ctx):
    """Fine-tuning changes exactly these: they must be variables, and trainable."""
    obj = ctx.model()
    trainable, problem = _listed_variables(obj, "trainable_variables")
    if problem:
        yield error(problem, "set root.trainable_variables (a list, possibly empty)")
        return
    listed, _ = _listed_variables(obj, "variables")
    if listed is not None:
        listed_ids = {id(v) for v in listed}
        outside = [v for v in trainable if id(v) not in listed_ids]
        if outside:
            yield error(
                f"{_count(len(outside), 'trainable variable')} not in obj.variables: "
                f"{_names(outside)}",
                "obj.trainable_variables must be a subset of obj.variables",
            )
    frozen = [v for v in trainable if not v.trainable]
    if frozen:
        yield error(
            f"{_count(len(frozen), 'variable')} in obj.trainable_variables with "
            f"trainable=False: {_names(frozen)}",
            "leave non-trainable variables (e.g. batch-norm statistics) out of "
            "trainable_variables",
        )
    if not trainable:
        yield info("obj.trainable_variables is empty: fine-tuning changes nothing")


@check("R4")
def regularization_losses(ctx):
    """hub.KerasLayer adds each loss to the fine-tuning objective by calling it."""
    obj = ctx.model()
    hint = "set root.regularization_losses to a list of zero-argument tf.functions"
    if not hasattr(obj, "regularization_losses"):
        yield error("obj.regularization_losses is missing (use [] if there are none)", hint)
        return
    losses = obj.regularization_losses
    if not isinstance(losses, collections.abc.Sequence) or isinstance(losses, str):
        yield error(
            f"obj.regularization_losses is a {type(losses).__name__}, not a list", hint
        )
        return
    for index, loss in enumerate(losses):
        problem = _loss_problem(loss)
        if problem:
            yield error(f"obj.regularization_losses[{index}] {problem}", hint)


def _loss_problem(loss):
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


# C1-C5: the call.


@check("C1")
def input_signature(ctx):
    """Consumers feed decoded images: float32, [batch, height, width, 3]."""
    names, _ = ctx.call_arguments()
    if not names:
        yield error("__call__ takes no images argument", "define __call__(images, training=False)")
        return
    specs = {}
    for trace in ctx.traced_arguments():
        spec = trace.get(names[0])
        specs.setdefault(_describe_spec(spec), spec)
    for spec in specs.values():
        for problem in _image_spec_problems(spec):
            yield error(
                f"__call__ is traced for {_describe_spec(spec)}: {problem}",
                "trace __call__ with tf.TensorSpec([None, height, width, 3], "
                "tf.float32) (height and width None where the model allows)",
            )
    if len(specs) == 1 and not _image_spec_problems(next(iter(specs.values()))):
        yield info(_size_description(next(iter(specs.values()))))


def _size_description(spec):
    height, width = spec.shape[1], spec.shape[2]
    if height is None and width is None:
        return "height and width are free"
    if height is not None and width is not None:
        return f"height and width are fixed at {height}x{width}"
    return f"height is {height or 'free'} and width is {width or 'free'}"


@check("C1")
def free_size(ctx):
    """Free height and width promise any size: a second one must work as the first.

    For a classifier that means [batch, num_classes] logits again; for a
    feature vector, feature_size_constant compares the two sizes.
    """
    if not ctx.has_free_hw():
        raise Skip("height and width are fixed, so there is one size only")
    first, (height, width) = ctx.reference_output(), ctx.second_hw()
    hint = ("export at one fixed size if the architecture does not accept every size "
            "(as NASNet does not)")
    try:
        output = ctx.second_size_output()
    except Exception as e:
        yield error(f"height and width are free, but __call__ fails at {height}x{width}: "
                    f"{type(e).__name__}: {summarize(e)}", hint)
        return
    if output.ndim != 2 or len(output) != SECOND_SIZE_BATCH:
        yield error(f"at {height}x{width}, a batch of {SECOND_SIZE_BATCH} gives outputs of "
                    f"shape {list(output.shape)}; expected [{SECOND_SIZE_BATCH}, N]", hint)
    elif ctx.task == "classification" and first.ndim == 2 and (
            output.shape[1] != first.shape[1]):
        first_height, first_width = ctx.call_hw()
        yield error(f"{first.shape[1]} logits at {first_height}x{first_width} but "
                    f"{output.shape[1]} at {height}x{width}",
                    "give every size the same classifier head (global pooling before "
                    "the last layer), or export at one fixed size")


@check("C2")
def training_argument(ctx):
    """Fine-tuning needs training=True traced; everyone else needs False by default."""
    names, defaults = ctx.call_arguments()
    hint = "define __call__(images, training=False) and trace it for both values"
    if "training" not in names:
        yield error("__call__ has no `training` argument", hint)
        return
    if defaults.get("training", "no default") is not False:
        yield error(
            f"training defaults to {defaults.get('training', 'nothing')!r}; "
            "expected False",
            hint,
        )
    traced = _training_values(ctx.traced_arguments())
    for value in (False, True):
        if value not in traced:
            yield error(f"__call__ is not traced for training={value}", hint)


@check("C2")
def training_call(ctx):
    """Fine-tuning calls obj(images, training=True): it must run, not just be traced."""
    ctx.require_training_trace()
    try:
        ctx.training_call()
    except Exception as e:
        yield error(
            f"obj(images, training=True) fails: {type(e).__name__}: {summarize(e)}",
            "the training=True trace must run on float32 images in [0, 1]; call it "
            "in Python to see the error",
        )


@check("C3")
def deterministic(ctx):
    """Inference must not depend on chance (e.g. dropout left on)."""
    difference = ctx.determinism_difference()
    if not difference <= DETERMINISM_TOLERANCE:
        yield error(
            f"two identical calls with training=False differ by {difference:.2e} "
            "(relative)",
            "remove randomness (dropout, noise) from the training=False call",
        )


@check("C3")
def batch_independent(ctx):
    """A consumer's result for one image must not depend on what else is batched.

    The batch size stays the same and only the other examples change: kernels
    differ between batch sizes, and a deep network with random weights
    amplifies their rounding differences past any fixed tolerance
    (EfficientNetV2L: 1.5e-2 between a batch of 1 and of 3), which is not
    the dependence the clause forbids.
    """
    if not ctx.determinism_difference() <= DETERMINISM_TOLERANCE:
        raise Skip("identical calls already differ (see deterministic)")
    images = ctx.images()
    images[1:] = 1.0 - images[1:]
    changed = ctx.infer(images)[:1]
    difference = export.relative_difference(changed, ctx.reference_output()[:1])
    if not difference <= BATCH_TOLERANCE:
        yield error(
            f"example 0 changes by {difference:.2e} (relative), more than "
            f"{BATCH_TOLERANCE:.0e}, when the other {BATCH - 1} examples of its "
            "batch change",
            "use moving statistics, not batch statistics, when training=False",
        )


@check("C4")
def output_tensor(ctx):
    """Consumers stack a head on one float32 [batch, N] tensor."""
    hint = "return one float32 tensor of shape [batch, N] from __call__"
    try:
        output = ctx.raw_output()
    except Exception as e:
        yield error(
            f"obj(images, training=False) fails on a batch of {BATCH}: "
            f"{type(e).__name__}: {summarize(e)}",
            hint,
        )
        return
    if not tf.is_tensor(output):
        yield error(f"__call__ returns a {type(output).__name__}, not one tensor", hint)
        return
    problems = []
    if output.dtype != tf.float32:
        problems.append(f"the output is {output.dtype.name}; expected float32")
    if output.shape.rank != 2:
        problems.append(f"the output has shape {output.shape}; expected rank 2")
    elif output.shape[0] != BATCH:
        problems.append(f"a batch of {BATCH} gives {output.shape[0]} outputs")
    for problem in problems:
        yield error(problem, hint)
    if not problems:
        yield info(f"outputs float32 [batch, {output.shape[1]}]")


@check("C4")
def documented_output_size(ctx):
    """A head is built for the N the model's documentation states: it must be true."""
    output = ctx.reference_output()
    if output.ndim != 2:
        raise Skip("__call__ does not return [batch, N] (see output_tensor)")
    documented = _documented_sizes(ctx.provenance)
    if not documented:
        yield info(f"no output size documented (no {export.PROVENANCE_FILE} with one)")
    noun = "logits" if ctx.task == "classification" else "features"
    for field, size in documented:
        if size != output.shape[1]:
            yield error(
                f"__call__ returns {output.shape[1]} {noun} but "
                f"{export.PROVENANCE_FILE} documents {size} ({field})",
                "export the model again, so that its provenance describes it",
            )


def _documented_sizes(provenance):
    """(field, N) for each size of the output that hubexport's provenance states."""
    sizes = []
    for field, key in (("output", "size"), ("labels", "count")):
        value = provenance.get(field)
        size = value.get(key) if isinstance(value, dict) else None
        if isinstance(size, int) and not isinstance(size, bool):
            sizes.append((f"{field}.{key}", size))
    return sizes


@check("C4")
def output_finite(ctx):
    """NaN or inf at the ends of [0, 1] means broken preprocessing or weights."""
    images = ctx.images()
    images[0], images[1] = 0.0, 1.0
    outputs = ctx.infer(images)
    kinds = ("all zeros", "all ones", "uniform random values")
    for kind, output in zip(kinds, outputs):
        if not np.all(np.isfinite(output)):
            yield error(
                f"the output is not finite (NaN or inf) for images of {kind}",
                "check the preprocessing inside the model (e.g. a log or a division "
                "by the input) and the weights",
            )


@check("C4")
def feature_size_constant(ctx):
    """A head built at one size must fit the features at every other size."""
    first = ctx.call_hw()
    if ctx.task != "feature_vector":
        raise Skip(f"only for feature vectors; the task is {ctx.task or 'unknown'}")
    first_count, second_count = _counts_at_both_sizes(ctx)
    second = ctx.second_hw()
    if first_count != second_count:
        yield error(
            f"{first_count} features at {first[0]}x{first[1]} but {second_count} at "
            f"{second[0]}x{second[1]}",
            "pool the last feature map globally, or export at one fixed size",
        )


def _counts_at_both_sizes(ctx):
    """(N at call_hw(), N at second_hw()); Skip unless free_size could call both."""
    if not ctx.has_free_hw():
        raise Skip("height and width are fixed, so there is one size only")
    first = ctx.reference_output()
    try:
        second = ctx.second_size_output()
    except Exception:
        raise Skip("__call__ fails at the second size (see free_size)") from None
    if first.ndim != 2:
        raise Skip("__call__ does not return [batch, N] (see output_tensor)")
    if second.ndim != 2:
        raise Skip("__call__ does not return [batch, N] at the second size (see free_size)")
    return first.shape[1], second.shape[1]


@check("C4")
def logits_not_probabilities(ctx):
    """Consumers apply their own softmax or sigmoid loss to logits."""
    reference = ctx.reference_output()
    if ctx.task != "classification":
        raise Skip(f"only for classification; the task is {ctx.task or 'unknown'}")
    extremes = ctx.images(2)
    extremes[0], extremes[1] = 0.0, 1.0
    finding = probability_finding(np.concatenate([reference, ctx.infer(extremes)]))
    if finding:
        yield finding


def probability_finding(outputs):
    """An error (or a warning) if [batch, N] `outputs` look like probabilities.

    The heuristic, for outputs on varied inputs (random images, all zeros, all
    ones): logits are unbounded scores, so some are negative or above 1;
    probabilities never are. Every value in [0, 1] with rows summing to 1
    (within 1e-3) is a softmax. Every value in [0, 1] otherwise is a sigmoid,
    unless there are fewer than 16 values, where chance is plausible and it is
    only a warning. A ReLU before the scores gives values >= 0 but not bounded
    by 1, so it is not flagged.
    """
    if outputs.ndim != 2 or not np.all((outputs >= 0.0) & (outputs <= 1.0)):
        return None
    hint = "return the scores before the final softmax or sigmoid"
    if np.all(np.abs(outputs.sum(axis=1) - 1.0) <= SOFTMAX_SUM_TOLERANCE):
        return error(
            "the outputs are probabilities: every row is in [0, 1] and sums to 1 "
            "(a softmax); expected logits",
            hint,
        )
    if outputs.size >= MIN_VALUES_FOR_SIGMOID:
        return error(
            f"all {outputs.size} outputs are in [0, 1], like a sigmoid's; expected "
            "logits, which are unbounded",
            hint,
        )
    return warning(
        f"all {outputs.size} outputs are in [0, 1]: maybe a sigmoid's probabilities "
        "rather than logits",
        hint,
    )


@check("C4")
def top_k_labels(ctx):
    """An optional top_k signature names the top classes, one label per class."""
    signature = getattr(ctx.model(), "signatures", {}).get(serving.TOP_K_SIGNATURE)
    if signature is None:
        raise Skip("no top_k signature (optional; hubexport export --labels adds one)")
    logits = ctx.reference_output()
    path = os.path.join(ctx.path, labels_lib.ASSET_PATH)
    hint = (f"store one label per class, in class order, as {labels_lib.ASSET_PATH} "
            "and return them from top_k")
    try:
        labels = labels_lib.read(path)
    except Exception as e:
        yield error(f"top_k has no usable {labels_lib.ASSET_PATH}: {summarize(e)}", hint)
        return
    if len(labels) != logits.shape[1]:
        yield error(
            f"{labels_lib.ASSET_PATH} has {len(labels)} labels but the model has "
            f"{logits.shape[1]} classes", hint)
        return
    outputs = signature(images=tf.constant(ctx.images()))
    if set(outputs) != {"labels", "confidences"}:
        yield error(f"top_k returns {sorted(outputs)}; expected labels and confidences", hint)
        return
    names, confidences = outputs["labels"].numpy(), outputs["confidences"].numpy()
    if names.shape != confidences.shape or names.shape[0] != len(logits):
        yield error(f"top_k returns labels {names.shape} and confidences "
                    f"{confidences.shape} for a batch of {len(logits)}", hint)
        return
    activation, problem = _top_k_activation(ctx, logits, confidences, labels, names)
    if problem:
        yield error(f"top_k {problem}", hint)
    else:
        yield info(f"top_k: {names.shape[1]} of {len(labels)} labels by {activation}")


def _top_k_activation(ctx, logits, confidences, labels, names):
    """(the activation top_k applies, or None and what is wrong)."""
    if np.any(np.diff(confidences, axis=1) > 1e-6):
        return None, "confidences are not sorted, most confident first"
    candidates = _documented_activations(ctx.provenance)
    for activation in candidates:
        mismatch = serving.top_k_mismatch(logits, labels, activation, confidences, names)
        if mismatch is None:
            return activation, None
        if mismatch == "labels":
            return None, f"labels are not {labels_lib.ASSET_PATH}'s names of the top classes"
    return None, (
        f"confidences are not the {' or '.join(candidates)} of the logits of __call__"
    )


def _documented_activations(provenance):
    """The activation the provenance documents (output.activation, else multi_label),
    or both when it documents none."""
    output = provenance.get("output")
    activation = output.get("activation") if isinstance(output, dict) else None
    if activation in serving.ACTIVATIONS:
        return [activation]
    multi_label = provenance.get("multi_label")
    return {True: ["sigmoid"], False: ["softmax"]}.get(multi_label, ["softmax", "sigmoid"])


@check("C5")
def hyperparameters(ctx):
    """obj(images) must work without them, and they must reach both modes."""
    names, defaults = ctx.call_arguments()
    hparams = [n for n in names[1:] if n != "training"]
    traces = ctx.traced_arguments()
    for name in hparams:
        if name not in defaults:
            yield error(
                f"the hyperparameter {name} has no default, so obj(images) fails",
                f"give {name} a Python default",
            )
            continue
        for training in (False, True):
            if not any(_traced_as_tensor(t, name, training) for t in traces):
                yield error(
                    f"the hyperparameter {name} is not traced as a tensor with "
                    f"training={training}, so obj(images, training={training}, "
                    f"{name}=value) fails",
                    f"trace __call__ with a tf.TensorSpec for {name} for both values "
                    "of training",
                )
    if hparams:
        described = ", ".join(f"{n}={defaults.get(n, '<required>')!r}" for n in hparams)
        yield info(f"keyword hyperparameters: {described}")


def _traced_as_tensor(trace, name, training):
    return isinstance(trace.get(name), tf.TensorSpec) and training in _training_values(
        [trace]
    )


@check("C5")
def hyperparameter_effects(ctx):
    """A hyperparameter that changes nothing misleads whoever tunes it.

    batch_norm_momentum must do what batch norm's momentum does; any other
    must change the output or a variable, with training=False or True.
    """
    names, defaults = ctx.call_arguments()
    traces = ctx.traced_arguments()
    hparams = [n for n in names[1:] if n != "training" and n in defaults]
    if hparams:
        ctx.reference_output()  # Skip if inference fails (see output_tensor).
    for name in hparams:
        specs = {training: _traced_spec(traces, name, training) for training in (False, True)}
        if name == MOMENTUM and specs[True] is not None and _moving_means(ctx):
            yield from _momentum_findings(ctx, specs[True])
        elif any(specs.values()):  # Else hyperparameters reports it.
            yield from _effect_findings(ctx, name, defaults[name], specs)


def _traced_spec(traces, name, training):
    """The TensorSpec `name` is traced as with `training`, or None."""
    specs = [t[name] for t in traces if _traced_as_tensor(t, name, training)]
    return specs[0] if specs else None


def _moving_means(ctx):
    """(variable, value as loaded) for every batch-norm moving mean, by name."""
    return [(v, value) for v, value in ctx.loaded_values() if "moving_mean" in v.name]


def _momentum_findings(ctx, spec):
    """With momentum m, a training call moves each moving mean by 1 - m of its
    distance to the batch mean: at m = 0.5 half as far as at m = 0.

    Judged on the median over the moving means of each one's ratio of the two
    moves, within MOMENTUM_RATIO_TOLERANCE: in a deep network with random
    weights the batch means of the two calls themselves drift apart layer by
    layer (ResNetRS420 at 32x32: 7 of its moving means moved 0.48 times as
    far, not 0.50), while a keyword that is ignored moves them all as far
    (ratio 1).
    """
    low, high = MOMENTUM_PROBES
    means = _moving_means(ctx)
    full, part = (_mean_moves(ctx, means, spec, m) for m in MOMENTUM_PROBES)
    hint = (f"set the momentum of every batch norm layer to {MOMENTUM} while tracing "
            "(as hubexport.reusable does), or remove the keyword")
    ratio, moved = median_ratio(part, full)
    if not moved:
        yield error(f"obj(images, training=True, {MOMENTUM}={low}) moves none of the "
                    f"{len(means)} batch-norm moving means", hint)
        return
    factor = (1 - high) / (1 - low)
    if not abs(ratio - factor) <= MOMENTUM_RATIO_TOLERANCE:
        yield error(
            f"with training=True, {MOMENTUM}={high} moved the batch-norm moving means "
            f"{ratio:.2f} times as far as {MOMENTUM}={low} (the median of "
            f"{_count(moved, 'moving mean')}); expected {factor:.2f}, as a moving "
            "mean moves by 1 - momentum of its distance to the batch mean", hint)


def median_ratio(moves, reference):
    """(the median over variables of each one's fitted ratio moves ~ f * reference,
    how many moved in `reference`); (nan, 0) when none did."""
    ratios = [_fitted_ratio([m], [r]) for m, r in zip(moves, reference) if np.any(r)]
    return (float(np.median(ratios)) if ratios else float("nan")), len(ratios)


def _mean_moves(ctx, means, spec, momentum):
    """How far obj(images, training=True, batch_norm_momentum=momentum) moves each mean."""
    with ctx.restoring_variables():
        ctx.call(ctx.images(), training=True, **{MOMENTUM: tf.constant(momentum, spec.dtype)})
        return [v.numpy() - value for v, value in means]


def _fitted_ratio(moves, reference):
    """The least-squares factor f of moves ~ f * reference."""
    a = np.concatenate([np.ravel(m) for m in moves])
    b = np.concatenate([np.ravel(r) for r in reference])
    return float(np.dot(a, b) / np.dot(b, b)) if np.dot(b, b) else float("inf")


def _effect_findings(ctx, name, default, specs):
    """Another value of `name` must change the output or a variable."""
    value = _other_value(default)
    if value is None:
        yield info(f"{name}={default!r} not tried with another value")
        return
    try:
        changed = _changes_something(ctx, name, default, value, specs)
    except Exception as e:
        yield warning(f"obj(images, {name}={value!r}) fails: {type(e).__name__}: "
                      f"{summarize(e)}", f"document which values {name} takes")
        return
    if not changed:
        yield error(
            f"{name}={value!r} instead of {default!r} changes neither the output nor "
            "any variable, with training=False or True",
            f"pass {name} to the layers it is meant for, or remove the keyword")


def _other_value(default):
    """A second value to try for a hyperparameter whose default is `default`."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    return None


def _changes_something(ctx, name, default, value, specs):
    """Whether name=value changes inference's output, else a training call's effects."""
    if specs[False] is not None:
        output = ctx.call(ctx.images(), **{name: tf.constant(value, specs[False].dtype)})
        difference = export.relative_difference(output.numpy(), ctx.reference_output())
        if not difference <= DETERMINISM_TOLERANCE:
            return True
    spec = specs[True]
    if spec is None:
        return False
    effects = [_training_effects(ctx, name, tf.constant(v, spec.dtype))
               for v in (default, value)]
    return not _same_effects(*effects)


def _training_effects(ctx, name, value):
    """(output, values of the variables it changed) of obj(images, training=True)."""
    with ctx.restoring_variables():
        output = ctx.call(ctx.images(), training=True, **{name: value}).numpy()
        changed = {i: v.numpy() for i, (v, loaded) in enumerate(ctx.loaded_values())
                   if not np.array_equal(v.numpy(), loaded)}
    return output, changed


def _same_effects(one, other):
    """Whether two (output, changed variables) agree, within DETERMINISM_TOLERANCE."""
    (output, state), (other_output, other_state) = one, other
    pairs = [(output, other_output)] + [(state[i], other_state[i]) for i in state
                                         if i in other_state]
    return state.keys() == other_state.keys() and all(
        a.shape == b.shape and export.relative_difference(a, b) <= DETERMINISM_TOLERANCE
        for a, b in pairs)


@check("R3")
def training_gradients(ctx):
    """Fine-tuning moves obj.trainable_variables only if gradients reach them."""
    ctx.require_training_call()
    trainable, problem = _listed_variables(ctx.model(), "trainable_variables")
    if problem:
        raise Skip(f"{problem} (see trainable_variables)")
    trainable = [v for v in trainable if v.trainable]
    if not trainable:
        raise Skip("obj.trainable_variables is empty (see trainable_variables)")
    images = ctx.gradient_images()
    with ctx.restoring_variables():
        with tf.GradientTape() as tape:
            output = ctx.call(images, training=True)
            weights = tf.random.stateless_uniform(tf.shape(output), seed=(0, 0))
            loss = tf.reduce_sum(tf.cast(output, tf.float32) * weights)
        gradients = tape.gradient(loss, trainable)
    missing = [v for v, g in zip(trainable, gradients) if g is None]
    message = (
        f"no gradient reaches {len(missing)} of {len(trainable)} trainable variables "
        f"with training=True: {_names(missing)}"
    )
    hint = "do not stop gradients (tf.stop_gradient, integer casts) in the training call"
    if 2 * len(missing) > len(trainable):
        yield error(message, hint)
    elif missing:
        yield warning(message, hint)


# K1-K3: the consumers.


def _import_hub():
    """tensorflow_hub and tf_keras (hub.KerasLayer is a tf_keras layer)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow_hub as hub
            import tf_keras
    except Exception as e:
        raise Unavailable(
            f"tensorflow_hub cannot be imported: {type(e).__name__}: {summarize(e)} "
            "(tensorflow_hub 0.16 needs tf_keras and setuptools<82)"
        ) from None
    return hub, tf_keras


def _compile(keras_module, model, optimizer=None):
    """SGD with a high learning rate (or `optimizer`), so one step moves every weight.

    The fit steps run eagerly (the restored functions still run as graphs).
    Eagerly, TF builds the gradient of a restored function once per loaded
    function and reuses it, so fine-tuning through hub.KerasLayer and
    TFSMLayer reuses what training_gradients built. A graph-mode tf_keras fit
    of a restored model also leaked about twice the model's weights per
    check (measured on ConvNeXtBase), which ran a 40-model catalog process
    out of 24 GiB.
    """
    model.compile(
        optimizer=optimizer or keras_module.optimizers.SGD(FINE_TUNING_LEARNING_RATE),
        loss="mse",
        run_eagerly=True,
    )


def _fit_one_batch(model, images):
    """One training step on random targets."""
    targets = np.random.default_rng(1).normal(size=(len(images), 2)).astype(np.float32)
    model.fit(images, targets, batch_size=len(images), epochs=1, verbose=0)


def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _moved(variables, before):
    return [v for v, old in zip(variables, before) if not np.array_equal(v.numpy(), old)]


def _hub_model(hub, tf_keras, obj, hw, trainable):
    layer = hub.KerasLayer(obj, trainable=trainable)
    model_class = tf_keras.Sequential if trainable else _head_only_class(tf_keras)
    model = model_class([
        tf_keras.layers.InputLayer(input_shape=(*hw, 3)),
        layer,
        tf_keras.layers.Dense(2),
    ])
    _compile(tf_keras, model)
    return layer, model


def _head_only_class(tf_keras):
    """A Sequential whose fit step differentiates only model.trainable_variables.

    The stock step does the same, but its tape also watches the frozen
    backbone's variables (restored tf.Variables stay trainable), so an eager
    step builds the gradient of the training=False trace that no weight needs:
    most of hub_frozen's time. Which variables the step may change is the same.
    """

    class HeadOnly(tf_keras.Sequential):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(self.trainable_variables)
                loss = self.compute_loss(x, y, self(x, training=True))
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
            return {"loss": loss}

    return HeadOnly


@check("K1")
def hub_fine_tuning(ctx):
    """hub.KerasLayer(trainable=True) in tf_keras: one fit step moves the backbone.

    Batch-norm statistics are recognized by name ("moving_mean",
    "moving_variance"); when the model has any, one of them must move.
    """
    hub, tf_keras = _import_hub()
    ctx.require_training_call()
    losses = getattr(ctx.model(), "regularization_losses", [])
    if any(_loss_problem(loss) for loss in losses):
        raise Skip("hub.KerasLayer would add the broken regularization losses to the "
                   "fit loss (see regularization_losses)")
    images = ctx.gradient_images()
    with ctx.restoring_variables():
        layer, model = _hub_model(hub, tf_keras, ctx.model(), ctx.call_hw(), True)
        trainable, frozen = list(layer.trainable_weights), list(layer.non_trainable_weights)
        before = _snapshot(trainable + frozen)
        _fit_one_batch(model, images)
        moved = {id(v) for v in _moved(trainable + frozen, before)}
    if not trainable:
        yield error(
            "the hub.KerasLayer has no trainable weights, so fine-tuning changes nothing",
            "list the trainable variables in root.trainable_variables",
        )
    elif not any(id(v) in moved for v in trainable):
        yield error(
            f"one fit step moved none of the {len(trainable)} trainable weights of "
            "the backbone",
            "make sure gradients reach obj.trainable_variables with training=True",
        )
    statistics = [v for v in frozen if "moving" in v.name]
    if statistics and not any(id(v) in moved for v in statistics):
        yield error(
            f"one fit step did not update any of the {len(statistics)} batch-norm "
            "statistics",
            "call the model with training=True in the training trace, so batch "
            "norm uses and updates batch statistics",
        )
    yield info(
        f"one fit step moved {sum(id(v) in moved for v in trainable)} of "
        f"{len(trainable)} trainable and {sum(id(v) in moved for v in frozen)} of "
        f"{len(frozen)} non-trainable backbone weights"
    )


@check("K1")
def hub_frozen(ctx):
    """hub.KerasLayer(trainable=False) promises a fixed backbone while a head trains."""
    hub, tf_keras = _import_hub()
    images = ctx.images()
    with ctx.restoring_variables():
        layer, model = _hub_model(hub, tf_keras, ctx.model(), ctx.call_hw(), False)
        weights = list(layer.weights)
        before = _snapshot(weights)
        _fit_one_batch(model, images)
        moved = _moved(weights, before)
    if moved:
        yield error(
            f"with trainable=False, one fit step changed "
            f"{_count(len(moved), 'backbone variable')}: {_names(moved)}",
            "the training=False call must not update variables (e.g. batch-norm "
            "statistics or counters)",
        )


@check("K2")
def tfsm_layer(ctx):
    """Keras 3 users load the model with TFSMLayer, then predict and fine-tune.

    TFSMLayer is fitted with plain SGD: it names its Keras variables after
    the restored tf.Variables, whose names always end in ":0", and in a
    default (graph-mode) fit Keras 3 optimizers with slot variables (Adam,
    AdamW, RMSprop, SGD with momentum) fail to name their slots
    ("'conv_kernel:0_momentum' is not a valid scope name"), whatever the
    SavedModel. This eager fit would not fail, so it would prove nothing
    about Adam; the stateful optimizer's step runs through
    hubexport.keras.ReusableLayer, the layer that works in any fit.
    """
    obj = ctx.model()
    missing = [f"obj.{name}" for name in ("serve", "serve_training")
               if _restored_function(obj, name) is None]
    if missing:
        yield error(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, "
            "so keras.layers.TFSMLayer(path, call_endpoint='serve', "
            "call_training_endpoint='serve_training') fails",
            "add root.serve and root.serve_training: tf.functions taking one images "
            "tensor that call __call__ with training=False and True",
        )
        return
    serve = _restored_function(obj, "serve")
    spec = serve.concrete_functions[0].structured_input_signature[0][0]
    images = ctx.gradient_images(hw=ctx.hw_for(spec, "obj.serve", "tfsm_layer"))
    with ctx.restoring_variables():
        yield from _tfsm_fine_tuning(ctx, images)
    yield from _reusable_layer(ctx)


def _tfsm_layer(ctx):
    """keras.layers.TFSMLayer(path, ...), on the model the other checks loaded.

    TFSMLayer takes a path and calls tf.saved_model.load(path) itself; it is
    handed the loaded object instead, so the model is loaded once and the
    gradients TF built for the earlier checks are reused (half of this
    check's time for a large model).
    """
    import keras

    loaded = ctx.model()
    load = tf.saved_model.load
    tf.saved_model.load = lambda path, *args, **kwargs: (
        loaded if path == ctx.path else load(path, *args, **kwargs))
    try:
        return keras.layers.TFSMLayer(
            ctx.path, call_endpoint="serve", call_training_endpoint="serve_training"
        )
    finally:
        tf.saved_model.load = load


def _tfsm_fine_tuning(ctx, images):
    import keras

    layer = _tfsm_layer(ctx)
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    _compile(keras, model)
    predictions = model.predict(images, verbose=0)
    if predictions.shape != (len(images), 2):
        yield error(f"a Dense(2) head on TFSMLayer predicts shape {predictions.shape}")
        return
    trainable = list(layer.trainable_weights)
    if not trainable:
        yield error(
            "TFSMLayer finds no trainable weights in serve and serve_training",
            "create the model's weights with trainable=True",
        )
        return
    before = _snapshot(trainable)
    _fit_one_batch(model, images)
    if not _moved(trainable, before):
        yield error(
            f"one fit step moved none of the {len(trainable)} trainable weights of "
            "the TFSMLayer",
            "make sure gradients reach the variables through serve_training",
        )


def _endpoint_hw(ctx, name):
    """The (height, width) to call obj.<name> (one images tensor) with."""
    spec = getattr(ctx.model(), name).concrete_functions[0].structured_input_signature[0][0]
    return ctx.hw_for(spec, f"obj.{name}", "tfsm_layer")


@check("K2")
def serve_endpoint(ctx):
    """TFSMLayer predicts with obj.serve: it must be obj(images, training=False)."""
    serve = _restored_function(ctx.model(), "serve")
    if serve is None:
        raise Skip("obj.serve is missing (see tfsm_layer)")
    if not ctx.determinism_difference() <= DETERMINISM_TOLERANCE:
        raise Skip("identical calls of __call__ already differ (see deterministic)")
    expected = ctx.reference_output()
    images = ctx.images(hw=_endpoint_hw(ctx, "serve"))
    if images.shape != ctx.images().shape:
        expected = ctx.infer(images)
    actual = np.asarray(serve(tf.constant(images)))
    hint = "make serve call __call__(images, training=False)"
    if actual.shape != expected.shape:
        yield error(f"obj.serve(images) has shape {actual.shape}; obj(images) has "
                    f"{expected.shape}", hint)
        return
    difference = export.relative_difference(actual, expected)
    if not difference <= ENDPOINT_TOLERANCE:
        yield error(
            f"obj.serve(images) differs from obj(images, training=False) by "
            f"{difference:.2e} (relative), more than {ENDPOINT_TOLERANCE:.0e}", hint)


@check("K2")
def serve_training_mode(ctx):
    """TFSMLayer fine-tunes with obj.serve_training: it must run training mode (C2).

    Observed through the batch-norm statistics it uses (variables named
    "moving"): a training call updates them, an inference call never does.
    Its outputs would also differ from serve's, but so they do for dropout
    or noise, and by how much needs a tolerance; an update needs none. A
    model without batch norm shows no difference to observe. The call runs
    under a tape, as TFSMLayer's fit runs it, so tfsm_layer reuses what
    TensorFlow prepares here.
    """
    serve_training = _restored_function(ctx.model(), "serve_training")
    if serve_training is None:
        raise Skip("obj.serve_training is missing (see tfsm_layer)")
    statistics = unique_by_identity([
        v for concrete in serve_training.concrete_functions for v in concrete.variables
        if "moving" in v.name])
    if not statistics:
        yield info("no batch-norm statistics (variables named 'moving'): training "
                   "mode is not observable")
        return
    images = ctx.gradient_images(hw=_endpoint_hw(ctx, "serve_training"))
    with ctx.restoring_variables():
        before = _snapshot(statistics)
        with tf.GradientTape():
            serve_training(tf.constant(images))
        moved = _moved(statistics, before)
    if not moved:
        yield error(
            f"obj.serve_training(images) updated none of the {len(statistics)} "
            "batch-norm statistics it uses, so it runs inference mode",
            "make serve_training call __call__(images, training=True)")


def _reusable_layer(ctx):
    """hubexport.keras.ReusableLayer fine-tunes in Keras 3 with Adam.

    What a broken training call or loss breaks is another check's error;
    here it is an info line. So are the batch-norm statistics: that
    __call__(training=True) updates them in a fit is hub_fine_tuning's
    error, that serve_training does, serve_training_mode's.
    """
    obj = ctx.model()
    try:
        ctx.require_training_call()
        if any(_loss_problem(loss) for loss in getattr(obj, "regularization_losses", [])):
            raise Skip("the regularization losses are broken (see regularization_losses)")
    except Skip as skip:
        yield info(f"ReusableLayer with Adam not tried: {skip}")
        return
    with ctx.restoring_variables():
        yield from _reusable_fine_tuning(ctx, ctx.gradient_images())


def _reusable_fine_tuning(ctx, images):
    import keras

    from hubexport.keras import ReusableLayer

    layer = ReusableLayer(ctx.model(), trainable=True)
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    _compile(keras, model, keras.optimizers.Adam(FINE_TUNING_LEARNING_RATE))
    trainable, frozen = list(layer.trainable_weights), list(layer.non_trainable_weights)
    before = _snapshot(trainable + frozen)
    _fit_one_batch(model, images)
    moved = {id(v) for v in _moved(trainable + frozen, before)}
    if trainable and not any(id(v) in moved for v in trainable):
        yield error(
            f"one Adam fit step through ReusableLayer moved none of the "
            f"{len(trainable)} trainable weights of the backbone",
            "list the trainable variables in obj.trainable_variables, and let "
            "gradients reach them with training=True")
        return
    yield info(
        f"one {type(model.optimizer).__name__} fit step moved "
        f"{sum(id(v) in moved for v in trainable)} of "
        f"{len(trainable)} trainable and {sum(id(v) in moved for v in frozen)} of "
        f"{len(frozen)} non-trainable backbone weights")


@check("K3")
def serving_signature(ctx):
    """TF Serving and saved_model_cli know a model by its serving_default signature."""
    signatures = getattr(ctx.model(), "signatures", {})
    if "serving_default" not in signatures:
        yield error(
            f"there is no serving_default signature (signatures: {sorted(signatures)})",
            "save with signatures={'serving_default': ...} taking `images`",
        )
        return
    signature = signatures["serving_default"]
    problems = list(_serving_input_problems(signature))
    problems += _serving_output_problems(signature, ctx.task)
    for problem in problems:
        yield error(
            f"serving_default {problem}",
            "serving_default must take `images` (float32 [batch, height, width, 3]) "
            "and return {'feature_vector': ...} or {'logits': ...}",
        )
    if not problems:
        yield from _serve_once(ctx, signature)


def _serving_input_problems(signature):
    args, kwargs = signature.structured_input_signature
    if args or set(kwargs) != {"images"}:
        yield f"takes {sorted(kwargs)}; expected one input named images"
        return
    for problem in _image_spec_problems(kwargs["images"]):
        yield problem


def _serving_output_problems(signature, task):
    outputs = signature.structured_outputs
    if not isinstance(outputs, dict):
        return [f"returns a {type(outputs).__name__}; expected a dict"]
    expected = [OUTPUT_KEYS[task]] if task else list(OUTPUT_KEYS.values())
    if len(outputs) != 1 or next(iter(outputs)) not in expected:
        return [
            f"returns the keys {sorted(outputs)}; expected exactly one: "
            f"{' or '.join(expected)}" + (f" (the task is {task})" if task else "")
        ]
    return []


def _serve_once(ctx, signature):
    _, key, value = ctx.serving_default_output(signature)
    if value.ndim < 1 or value.shape[0] != BATCH:
        yield error(
            f"serving_default returns {key} of shape {list(value.shape)} for a batch of "
            f"{BATCH}",
            "return one output per image, [batch, N]",
        )


@check("K3")
def serving_output(ctx):
    """TF Serving must answer as the model does: as __call__(images, training=False)."""
    signature = getattr(ctx.model(), "signatures", {}).get("serving_default")
    if signature is None or list(_serving_input_problems(signature)) or (
            _serving_output_problems(signature, ctx.task)):
        raise Skip("serving_default does not take images and return one output "
                   "(see serving_signature)")
    try:
        hw, key, output = ctx.serving_default_output(signature)
    except Exception:
        raise Skip("serving_default fails (see serving_signature)") from None
    if not ctx.determinism_difference() <= DETERMINISM_TOLERANCE:
        raise Skip("identical calls of __call__ already differ (see deterministic)")
    try:
        reference = (ctx.reference_output() if hw == ctx.call_hw()
                     else ctx.infer(ctx.images(hw=hw)))
    except Exception as e:
        yield error(f"serving_default takes {hw[0]}x{hw[1]} images, but __call__ fails on "
                    f"them: {type(e).__name__}: {summarize(e)}",
                    "trace serving_default and __call__ for the same image size")
        return
    if reference.ndim != 2:
        raise Skip("__call__ does not return [batch, N] (see output_tensor)")
    for problem in serving_output_problems(output, reference):
        yield error(f"serving_default's {key} {problem}",
                    f"return {{{key!r}: obj(images, training=False)}} from serving_default")


def serving_output_problems(output, reference):
    """What keeps serving_default's `output` from being __call__'s `reference` output
    ([batch, N]) on the same images: float32, rank 2, the same shape and values."""
    if output.dtype != np.float32:
        return [f"is {output.dtype}; expected float32"]
    if output.ndim != 2:
        return [f"has shape {list(output.shape)} (rank {output.ndim}); expected rank 2, "
                "[batch, N]"]
    if output.shape != reference.shape:
        return [f"has shape {list(output.shape)}; expected {list(reference.shape)}, "
                "as __call__ returns"]
    difference = export.relative_difference(output, reference)
    if not difference <= SERVING_TOLERANCE:
        return [f"differs from obj(images, training=False) on the same images by "
                f"{difference:.2e} (relative), more than {SERVING_TOLERANCE:.0e}"]
    return []
