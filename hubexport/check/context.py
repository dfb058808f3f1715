"""What the checks of one model share: the Context, the registry, the findings.

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
differentiate the model take fewer as images grow (contract.gradient_batch).
The batch sizes, tolerances and endpoint names are hubexport.contract's.
"""

import contextlib
import dataclasses
import os

import numpy as np
import tensorflow as tf

from hubexport import contract
from hubexport.check import graph_scan
from hubexport.check.parts import (endpoint_traces, image_spec_problems, listed_variables,
                                   restored_function, serving_meta_graph, tf2_problem,
                                   training_values)
from hubexport.reports import Finding

DEFAULT_SIZE = 224  # Height and width for free-size models without provenance.
DEFAULT_MIN_SIZE = 32  # Smallest size tried when the provenance gives none.
SECOND_WIDTH_STEP = 8  # The second size's width past its height's rule (not square).


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
    # Runs the training=True trace (the first run prepares the function it
    # differentiates: most of a check's time); the catalog tier runs these on
    # one architecture per Keras module.
    fine_tuning: bool = False


# Every check, in the order its module registers it (hubexport.check.CHECKS
# is the order they run in).
REGISTERED = []


def check(clause, fine_tuning=False):
    """Registers the decorated generator as the check of `clause` it names.

    clause: an ID of contract.CLAUSES (ValueError for another);
    fine_tuning: whether it runs the training=True trace (Check.fine_tuning).
    """
    if clause not in contract.CLAUSES:
        raise ValueError(f"@check({clause!r}): not a clause of HUB_CONTRACT.md; "
                         f"allowed: {', '.join(contract.CLAUSES)}")

    def register(function):
        REGISTERED.append(Check(function.__name__, clause, function, fine_tuning))
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
        self.provenance = (contract.load_provenance(path) if os.path.isdir(path)
                           else contract.Provenance())
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
        task = self.provenance.task
        if task in contract.OUTPUT_KEYS:
            return task, f"from {contract.PROVENANCE_FILE}"
        keys = self._serving_output_keys()
        for task, key in contract.OUTPUT_KEYS.items():
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
        signature = meta_graph.signature_def.get(contract.SERVING_DEFAULT)
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
        if tf2_problem(proto):
            raise Skip("not a TF2 SavedModel (see tf2_saved_model)")
        return serving_meta_graph(proto)

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
        fn = restored_function(self.model(), contract.CALL)
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
        return self.hw_for(self.image_spec(), contract.CALL, "input_signature")

    def hw_for(self, spec, endpoint, check_name):
        """The (height, width) to call `spec` with; Skip if it cannot take images."""
        if image_spec_problems(spec, allow_unknown_channels=True):
            raise Skip(
                f"the images argument of {endpoint} is not float32 [batch, height, "
                f"width, 3] (see {check_name})"
            )
        size = self.provenance.image_size
        if not isinstance(size, int) or size <= 0:
            size = DEFAULT_SIZE
        height, width = spec.shape[1], spec.shape[2]
        return (height or size, width or size)

    def has_free_hw(self):
        spec = self.image_spec()
        return spec.shape[1] is None and spec.shape[2] is None

    def second_hw(self):
        """A second size (>= the minimum) for free_size and feature_size_constant, its
        width SECOND_WIDTH_STEP past its height's rule: after a square size, not
        square, so that height and width are each tried (a model that confuses them,
        or takes only squares, fails)."""
        minimum = (self.provenance.input or contract.Input()).min_size
        if not isinstance(minimum, int) or minimum <= 0:
            minimum = DEFAULT_MIN_SIZE
        height, width = (_other_size(size, minimum) for size in self.call_hw())
        return height, width + SECOND_WIDTH_STEP

    def second_size_output(self):
        """obj(images) at second_hw(), once: the numpy output, or what it raised."""
        self.reference_output()
        images = self.images(contract.SECOND_SIZE_BATCH, self.second_hw())
        return self._once("second_size", lambda: self.call(images).numpy())

    def serving_default_output(self, signature):
        """(height and width, output key, numpy output) of `signature` (the
        serving_default) on images(): called once, raises what it raised."""
        spec = signature.structured_input_signature[1]["images"]
        hw = self.hw_for(spec, contract.SERVING_DEFAULT, "serving_signature")
        images = tf.constant(self.images(hw=hw))

        def call():
            (key, value), = signature(images=images).items()
            return hw, key, value.numpy()

        return self._once("serving_default", call)

    def images(self, batch=contract.CHECK_BATCH, hw=None):
        height, width = hw or self.call_hw()
        rng = np.random.default_rng(0)
        return rng.uniform(0.0, 1.0, (batch, height, width, 3)).astype(np.float32)

    def gradient_images(self, hw=None):
        """images() for a step that differentiates the model: fewer when large."""
        height, width = hw or self.call_hw()
        return self.images(contract.gradient_batch(height, width), (height, width))

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
            lambda: contract.relative_difference(
                self.infer(self.images()), self.reference_output()
            ),
        )

    def require_training_trace(self):
        """Skip unless __call__ takes training=True (see training_argument)."""
        traced = training_values(self.traced_arguments())
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
        for endpoint, concrete in endpoint_traces(obj):
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
            listed, _ = listed_variables(self.model(), "variables")
            used = [v for _, v in self.used_variables()]
            once = {id(v): v for v in (listed or []) + used}  # They do not hash by value.
            return [(v, v.numpy()) for v in once.values()]

        return self._once("loaded_values", snapshot)

    @contextlib.contextmanager
    def restoring_variables(self):
        """Undoes what a training call or a fit step does to the variables; yields
        a set that, once the block has ended, holds the id() of each variable it
        changed (the model's, as loaded: a check needs no snapshot of its own).

        Only the variables that changed are assigned again (a large model's
        weights are gigabytes, and a check changes a few or none of them).
        """
        saved = self.loaded_values()
        changed = set()
        try:
            yield changed
        finally:
            for variable, value in saved:
                if not np.array_equal(variable.numpy(), value):
                    changed.add(id(variable))
                    variable.assign(value)


def _other_size(size, minimum):
    smaller = max(minimum, size * 3 // 4)
    return smaller if smaller != size else size + 32
