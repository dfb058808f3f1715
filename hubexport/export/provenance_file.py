"""The provenance: hubexport's description of an export (assets.extra/hubexport.json),
written with the model card made from it, and read back.

It is a contract.Provenance (typed, versioned) written with to_json();
load_provenance reads it back as one, read_provenance as the plain dict.
"""

import json
import os
import platform

from hubexport import contract
from hubexport.contract import FEATURE_VECTOR, PROVENANCE_FILE
from hubexport.export.planning import request_key


def provenance(plan, built, difference):
    """The provenance of an export as the JSON object written (a dict)."""
    return provenance_record(plan, built, difference).to_json()


def provenance_record(plan, built, difference):
    """The provenance of an export of `plan`, as a contract.Provenance."""
    arch = plan.architecture
    height, width = built.input_hw
    return contract.Provenance(
        format=contract.PROVENANCE_FORMAT,
        architecture=arch.name if arch else None,
        source=contract.Source(
            kind="architecture" if arch else "keras_model",
            path=plan.keras_model.path if plan.keras_model else None,
            sha256=plan.keras_model.sha256 if plan.keras_model else None,
        ),
        task=plan.task,
        image_size=built.size[0] if built.size[0] == built.size[1] else list(built.size),
        input=contract.Input(
            dtype="float32",
            shape=[None, height, width, 3],
            range=[0.0, 1.0],
            channels="RGB",
            min_size=arch.min_size if arch else None,
            size_is_free=height is None,
        ),
        preprocessing=plan.preprocessing,
        feature_layer=plan.feature_layer,
        pooling=plan.pooling if plan.task == FEATURE_VECTOR else None,
        output=_output_description(plan, built),
        labels=contract.Labels(count=len(plan.labels), file=contract.LABELS_FILE)
        if plan.labels else None,
        multi_label=built.activation == "sigmoid",
        top_k=plan.top_k if plan.labels else None,
        signatures=contract.signature_names(labels=bool(plan.labels)),
        serving_size=list(built.size),
        batch_norm_momentum=built.batch_norm_momentum,
        jit_compile=plan.jit_compile,
        weights=contract.Weights(
            source=plan.weights.source,
            path=plan.weights.path,
            sha256=plan.weights.sha256,
        ),
        request_key=request_key(plan),
        verification=contract.Verification(
            max_relative_difference=difference,
            tolerance=contract.VERIFICATION_TOLERANCE,
        ),
        versions=_versions(arch.library if arch else "keras"),
    )


def _versions(library):
    import importlib

    import tensorflow as tf

    import hubexport

    return {
        "hubexport": hubexport.__version__,
        "tensorflow": tf.__version__,
        library: importlib.import_module(library).__version__,
        "python": platform.python_version(),
    }


def _output_description(plan, built):
    key = contract.OUTPUT_KEYS[plan.task]
    if plan.task == FEATURE_VECTOR:
        where = f"layer {plan.feature_layer}" if plan.feature_layer else "the last feature map"
        return contract.Output(
            key=key,
            size=built.output_size,
            meaning=f"global {'average' if plan.pooling == 'avg' else 'max'} pool of {where}",
        )
    if plan.labels_source == "imagenet":  # --labels=imagenet: the record says so in words.
        classes = ("the 1000 ImageNet classes, in Keras' class order "
                   "(keras.applications.imagenet_utils.decode_predictions), named in "
                   f"{contract.LABELS_FILE} from Keras' imagenet_class_index.json")
    elif plan.labels:
        classes = f"the {built.output_size} classes of {contract.LABELS_FILE}"
    elif plan.architecture:
        classes = ("the 1000 ImageNet classes, in Keras' class order "
                   "(keras.applications.imagenet_utils.decode_predictions)")
    else:
        classes = f"{built.output_size} classes"
    independent = built.activation == "sigmoid"
    return contract.Output(
        key=key,
        size=built.output_size,
        meaning=f"logits (before {built.activation}) over {classes}"
        + ("; each class is independent (multi-label)" if independent else ""),
        activation=built.activation,
    )


def _write_provenance(directory, plan, built, difference):
    """assets.extra/hubexport.json, and the model card made from it."""
    from hubexport.publish import model_card

    info = provenance(plan, built, difference)
    path = os.path.join(directory, PROVENANCE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    model_card.write(directory, info)
