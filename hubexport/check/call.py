"""The checks of the call (C1-C4): the images obj(images) takes, the training
argument, determinism, and the output (its shape, size, values, top_k labels).

The hyperparameters (C5) are checked in hyperparameters.py.
"""

import os

import numpy as np
import tensorflow as tf

from hubexport import contract
from hubexport import labels as labels_lib
from hubexport import serving
from hubexport.check.context import Skip, check, error, info, warning
from hubexport.check.parts import describe_spec, image_spec_problems, training_values
from hubexport.contract import (ALONE_VS_BATCH_TOLERANCE, CHECK_BATCH, CLASSIFICATION,
                                FEATURE_VECTOR, LABELS_FILE, PROBABILITY_SUM_TOLERANCE,
                                REPEAT_CALL_TOLERANCE, SECOND_SIZE_BATCH)
from hubexport.errors import summarize

MIN_VALUES_FOR_SIGMOID = 16  # Fewer values in [0, 1] may be chance.


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
        specs.setdefault(describe_spec(spec), spec)
    for spec in specs.values():
        for problem in image_spec_problems(spec):
            yield error(
                f"__call__ is traced for {describe_spec(spec)}: {problem}",
                "trace __call__ with tf.TensorSpec([None, height, width, 3], "
                "tf.float32) (height and width None where the model allows)",
            )
    if len(specs) == 1 and not image_spec_problems(next(iter(specs.values()))):
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
    elif ctx.task == CLASSIFICATION and first.ndim == 2 and (
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
    traced = training_values(ctx.traced_arguments())
    for value in (False, True):
        if value not in traced:
            yield error(f"__call__ is not traced for training={value}", hint)


@check("C2", fine_tuning=True)
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
    if not difference <= REPEAT_CALL_TOLERANCE:
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
    if not ctx.determinism_difference() <= REPEAT_CALL_TOLERANCE:
        raise Skip("identical calls already differ (see deterministic)")
    images = ctx.images()
    images[1:] = 1.0 - images[1:]
    changed = ctx.infer(images)[:1]
    difference = contract.relative_difference(changed, ctx.reference_output()[:1])
    if not difference <= ALONE_VS_BATCH_TOLERANCE:
        yield error(
            f"example 0 changes by {difference:.2e} (relative), more than "
            f"{ALONE_VS_BATCH_TOLERANCE:.0e}, when the other {CHECK_BATCH - 1} examples of its "
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
            f"obj(images, training=False) fails on a batch of {CHECK_BATCH}: "
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
    elif output.shape[0] != CHECK_BATCH:
        problems.append(f"a batch of {CHECK_BATCH} gives {output.shape[0]} outputs")
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
        yield info(f"no output size documented (no {contract.PROVENANCE_FILE} with one)")
    noun = "logits" if ctx.task == CLASSIFICATION else "features"
    for field, size in documented:
        if size != output.shape[1]:
            yield error(
                f"__call__ returns {output.shape[1]} {noun} but "
                f"{contract.PROVENANCE_FILE} documents {size} ({field})",
                "export the model again, so that its provenance describes it",
            )


def _documented_sizes(provenance):
    """(field, N) for each size of the output that hubexport's provenance states."""
    sizes = [("output.size", (provenance.output or contract.Output()).size),
             ("labels.count", (provenance.labels or contract.Labels()).count)]
    return [(field, size) for field, size in sizes if size is not None]


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
    if ctx.task != FEATURE_VECTOR:
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
    if ctx.task != CLASSIFICATION:
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
    if np.all(np.abs(outputs.sum(axis=1) - 1.0) <= PROBABILITY_SUM_TOLERANCE):
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
    signature = getattr(ctx.model(), "signatures", {}).get(contract.TOP_K_SIGNATURE)
    if signature is None:
        raise Skip("no top_k signature (optional; hubexport export --labels adds one)")
    logits = ctx.reference_output()
    path = os.path.join(ctx.path, LABELS_FILE)
    hint = (f"store one label per class, in class order, as {LABELS_FILE} "
            "and return them from top_k")
    try:
        labels = labels_lib.read(path)
    except Exception as e:
        yield error(f"top_k has no usable {LABELS_FILE}: {summarize(e)}", hint)
        return
    if len(labels) != logits.shape[1]:
        yield error(
            f"{LABELS_FILE} has {len(labels)} labels but the model has "
            f"{logits.shape[1]} classes", hint)
        return
    outputs = signature(images=tf.constant(ctx.images()))
    if set(outputs) != {contract.TOP_K_LABELS, contract.TOP_K_CONFIDENCES}:
        yield error(f"top_k returns {sorted(outputs)}; expected {contract.TOP_K_LABELS} and "
                    f"{contract.TOP_K_CONFIDENCES}", hint)
        return
    names = outputs[contract.TOP_K_LABELS].numpy()
    confidences = outputs[contract.TOP_K_CONFIDENCES].numpy()
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
            return None, f"labels are not {LABELS_FILE}'s names of the top classes"
    return None, (
        f"confidences are not the {' or '.join(candidates)} of the logits of __call__"
    )


def _documented_activations(provenance):
    """The activation the provenance documents (output.activation, else multi_label),
    or both when it documents none."""
    activation = (provenance.output or contract.Output()).activation
    if activation in serving.ACTIVATIONS:
        return [activation]
    multi_label = provenance.multi_label
    return {True: ["sigmoid"], False: ["softmax"]}.get(multi_label, ["softmax", "sigmoid"])
