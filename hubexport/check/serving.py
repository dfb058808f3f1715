"""The checks of TF Serving (K3): a serving_default signature that takes images
and answers as __call__(images, training=False) does."""

import numpy as np

from hubexport import contract
from hubexport.check.context import Skip, check, error
from hubexport.check.parts import image_spec_problems
from hubexport.contract import (CHECK_BATCH, OUTPUT_KEYS, REPEAT_CALL_TOLERANCE,
                                SERVING_DEFAULT, SERVING_VS_CALL_TOLERANCE)
from hubexport.errors import summarize


@check("K3")
def serving_signature(ctx):
    """TF Serving and saved_model_cli know a model by its serving_default signature."""
    signatures = getattr(ctx.model(), "signatures", {})
    if SERVING_DEFAULT not in signatures:
        yield error(
            f"there is no serving_default signature (signatures: {sorted(signatures)})",
            "save with signatures={'serving_default': ...} taking `images`",
        )
        return
    signature = signatures[SERVING_DEFAULT]
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
    for problem in image_spec_problems(kwargs["images"]):
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
    if value.ndim < 1 or value.shape[0] != CHECK_BATCH:
        yield error(
            f"serving_default returns {key} of shape {list(value.shape)} for a batch of "
            f"{CHECK_BATCH}",
            "return one output per image, [batch, N]",
        )


@check("K3")
def serving_output(ctx):
    """TF Serving must answer as the model does: as __call__(images, training=False)."""
    signature = getattr(ctx.model(), "signatures", {}).get(SERVING_DEFAULT)
    if signature is None or list(_serving_input_problems(signature)) or (
            _serving_output_problems(signature, ctx.task)):
        raise Skip("serving_default does not take images and return one output "
                   "(see serving_signature)")
    try:
        hw, key, output = ctx.serving_default_output(signature)
    except Exception:
        raise Skip("serving_default fails (see serving_signature)") from None
    if not ctx.determinism_difference() <= REPEAT_CALL_TOLERANCE:
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
    difference = contract.relative_difference(output, reference)
    if not difference <= SERVING_VS_CALL_TOLERANCE:
        return [f"differs from obj(images, training=False) on the same images by "
                f"{difference:.2e} (relative), more than {SERVING_VS_CALL_TOLERANCE:.0e}"]
    return []
