"""litert_conversion (K3, an optional consumer): serving_default converts to LiteRT and agrees.

LiteRT (TFLite) consumes the serving_default signature, as TF Serving does,
so the check sits under K3. It is optional: what it finds is a warning (info
when it passes), and an error only when asked for (`hubexport check
--require=litert`, checker.check(require=...)), which promotes the findings
after the run. Without ai_edge_litert the check is "unavailable".

Its cost is one conversion of serving_default alone (builtin ops, float,
batch free) at the size the other checks use, and one interpreter call at
batch 1 (hubexport.publish.litert does the work).
"""

import numpy as np

from hubexport import contract
from hubexport.check.context import Skip, Unavailable, check, info, warning
from hubexport.errors import UserError


@check("K3")
def litert_conversion(context):
    from hubexport.publish import litert

    try:
        interpreter = litert.interpreter_class()
    except UserError:
        raise Unavailable(f"ai_edge_litert is not installed ({litert.EXTRA})") from None
    model = context.model()
    signature = model.signatures.get(contract.SERVING_DEFAULT)
    if signature is None:
        raise Skip("no serving_default signature (see serving_signature)")
    spec = signature.structured_input_signature[1].get("images")
    if spec is None or len(signature.structured_outputs) != 1:
        raise Skip("serving_default does not take images and return one output "
                   "(see serving_signature)")
    hw = context.hw_for(spec, contract.SERVING_DEFAULT, "serving_signature")
    try:
        data = litert.convert_signature(model, signature, hw)
    except UserError as e:
        yield warning(str(e), "LiteRT runs only TFLite builtin ops without the Flex "
                              "delegate: compute serving_default with ops LiteRT has")
        return
    images = context.images(1, hw)
    difference = contract.relative_difference(*litert.outputs(data, signature, images, interpreter))
    if not np.isfinite(difference) or difference > contract.VERIFICATION_TOLERANCE:
        yield warning(
            f"the LiteRT model of serving_default differs from it by {difference:.2e} "
            f"relative at {hw[0]}x{hw[1]} (tolerance {contract.VERIFICATION_TOLERANCE:g})",
            "an op converts with other semantics; compare the two with hubexport litert")
        return
    yield info(f"serving_default converts to LiteRT builtins ({litert.megabytes(len(data))}) at "
               f"{hw[0]}x{hw[1]} and agrees to {difference:.1e} relative")
