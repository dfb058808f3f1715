"""The checks of the hyperparameters (C5): keyword arguments of __call__ with
defaults, traced as tensors for both values of training, that change something
(batch_norm_momentum: as batch norm's momentum does)."""

import numpy as np
import tensorflow as tf

from hubexport import contract
from hubexport.check.context import check, error, info, warning
from hubexport.check.parts import count, training_values
from hubexport.contract import MOMENTUM_RATIO_TOLERANCE, REPEAT_CALL_TOLERANCE
from hubexport.errors import summarize

MOMENTUM = contract.MOMENTUM_KEYWORD
MOMENTUM_PROBES = (0.0, 0.5)  # Far from 1, so the moving means move far.


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
    return isinstance(trace.get(name), tf.TensorSpec) and training in training_values(
        [trace]
    )


@check("C5", fine_tuning=True)
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
            f"{count(moved, 'moving mean')}); expected {factor:.2f}, as a moving "
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
        difference = contract.relative_difference(output.numpy(), ctx.reference_output())
        if not difference <= REPEAT_CALL_TOLERANCE:
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
    """Whether two (output, changed variables) agree, within REPEAT_CALL_TOLERANCE."""
    (output, state), (other_output, other_state) = one, other
    pairs = [(output, other_output)] + [(state[i], other_state[i]) for i in state
                                         if i in other_state]
    return state.keys() == other_state.keys() and all(
        a.shape == b.shape and contract.relative_difference(a, b) <= REPEAT_CALL_TOLERANCE
        for a, b in pairs)
