"""What may be exported: a request, validated into a Plan, without TensorFlow.

    plan = planning.plan("MobileNetV2", "feature_vector", image_size=224,
                         weights="none")

plan() refuses what cannot be exported with a UserError that says the fix;
request_key hashes what an export is made from (export_all's test of whether
an output is up to date).
"""

import dataclasses
import json

from hubexport import architectures, own_model
from hubexport import labels as labels_lib
from hubexport import weights as weights_lib
from hubexport.errors import UserError
from hubexport.contract import CLASSIFICATION, FEATURE_VECTOR

POOLINGS = ("avg", "max")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated export request; building it does not import TensorFlow.

    The source is an `architecture` (a row of the table) or a `keras_model`
    (a user's own model file); exactly one is set.
    """

    architecture: architectures.Architecture | None
    task: str
    image_size: int | None  # None: an own model's own size (224 if it is free).
    weights: weights_lib.Weights
    keras_model: own_model.OwnModel | None = None
    labels: tuple | None = None
    # Where the labels come from: "imagenet" (Keras' ImageNet class names,
    # --labels=imagenet), or None (a file, or no labels).
    labels_source: str | None = None
    top_k: int = 5
    multi_label: bool = False
    feature_layer: str | None = None
    pooling: str = "avg"
    jit_compile: bool = False  # The inference path compiled with XLA.

    @property
    def name(self):
        return self.architecture.name if self.architecture else self.keras_model.name

    @property
    def preprocessing(self):
        source = self.architecture or self.keras_model
        return source.preprocessing

    def describe(self):
        layer = f" ({self.feature_layer})" if self.feature_layer else ""
        size = f" at {self.image_size}x{self.image_size}" if self.image_size else ""
        jit = " (XLA)" if self.jit_compile else ""
        return f"{self.name} {self.task}{layer}{size}{jit}"


def plan(architecture=None, task=None, image_size=None, weights=None, *,
         keras_model=None, preprocessing=None, custom_objects=None, labels=None,
         top_k=None, multi_label=False, feature_layer=None, pooling=None,
         jit_compile=False):
    """Validates a request; raises UserError with the fix if it is refused.

    `labels` is the path of a labels file, or "imagenet" (any case; the
    keyword wins over a file of that name, `./imagenet` is the file): Keras'
    names of the 1000 ImageNet classes, allowed only for classification with
    weights="imagenet" (see _imagenet_labels_problem). The other arguments are
    the CLI flags of the same names.
    """
    if (architecture is None) == (keras_model is None):
        raise UserError(
            "pass exactly one of --architecture=NAME (a Keras application) and "
            "--keras_model=PATH (your own .keras or .h5 model)"
        )
    architectures.check_task(task)
    _only_for(CLASSIFICATION, task, labels=labels, top_k=top_k, multi_label=multi_label)
    _only_for(FEATURE_VECTOR, task, feature_layer=feature_layer, pooling=pooling)
    if top_k is not None and labels is None:
        raise UserError("--top_k needs --labels=FILE or --labels=imagenet (the top_k signature "
                        "returns label names)")
    if pooling is not None and pooling not in POOLINGS:
        raise UserError(f"--pooling={pooling} is unknown; allowed: {', '.join(POOLINGS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UserError(
            f"image_size must be a whole number of pixels; received {image_size!r}"
        )
    if not isinstance(jit_compile, bool):
        raise UserError(f"jit_compile must be true or false; received {jit_compile!r}")
    top_k = 5 if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"--top_k must be a whole number of at least 1; received {top_k!r}")
    imagenet_labels = labels_lib.is_imagenet(labels)
    if imagenet_labels:
        problem = _imagenet_labels_problem(architecture, weights)
        if problem:
            raise UserError(problem)
    read_labels = labels_lib.read(labels) if labels is not None and not imagenet_labels else None
    options = dict(task=task, labels=read_labels, top_k=top_k,
                   labels_source=labels_lib.IMAGENET if imagenet_labels else None,
                   multi_label=bool(multi_label), feature_layer=feature_layer,
                   pooling=pooling or "avg", jit_compile=jit_compile)
    if keras_model is not None:
        if weights is not None:
            raise UserError(
                "--weights does not apply to --keras_model (its weights are in the "
                "file); drop --weights"
            )
        source = own_model.parse(keras_model, preprocessing, custom_objects)
        return Plan(None, image_size=image_size, weights=weights_lib.Weights("file", source.path,
                    source.sha256), keras_model=source, **options)
    for flag, value in (("preprocessing", preprocessing), ("custom_objects", custom_objects)):
        if value is not None:
            raise UserError(
                f"--{flag} applies only to --keras_model; {architecture} has its "
                "own (see the architecture table); drop it"
            )
    arch = architectures.lookup(architecture)
    image_size = arch.default_size if image_size is None else image_size
    parsed = weights_lib.parse("imagenet" if weights is None else weights)
    problem = arch.size_problem(task, image_size, parsed.source == "imagenet")
    if problem:
        raise UserError(problem)
    if imagenet_labels:  # Fetched last: everything cheap was refused before.
        options["labels"] = labels_lib.imagenet()
    if task == CLASSIFICATION:
        _check_labels(options["labels"], top_k, architectures.IMAGENET_CLASSES, arch.name)
    return Plan(arch, image_size=image_size, weights=parsed, **options)


def _imagenet_labels_problem(architecture, weights):
    """Why --labels=imagenet is refused for this source and weights, or None.

    The ImageNet class names name the outputs of the ImageNet classifier, so
    only an application with weights="imagenet" may carry them. A weights
    file is refused even when its classifier has 1000 outputs: its classes
    are random or its trainer's, and ImageNet's names on them would be a lie.
    """
    if architecture is None:
        return ("--labels=imagenet names the outputs of a Keras application's ImageNet "
                "classifier; your --keras_model has its own classes: pass --labels=FILE")
    if weights is not None and weights.lower() != "imagenet":
        return (f"--labels=imagenet names the outputs of the ImageNet classifier, so it "
                f"needs --weights=imagenet; with --weights={weights} the classes are "
                "random or your own: pass --labels=FILE")
    return None


def _only_for(task, requested, **values):
    for flag, value in values.items():
        if value not in (None, False) and requested != task:
            raise UserError(
                f"--{flag} applies only to --task={task}; drop it or use that task"
            )


def _check_labels(labels, top_k, num_classes, source):
    labels_lib.check_count(labels, num_classes, source)
    if labels is not None and top_k > num_classes:
        raise UserError(
            f"--top_k={top_k} is more than the {num_classes} classes of {source}; "
            f"allowed: 1 to {num_classes}"
        )


def request_key(plan):
    """A hash of what an export is made from: the plan (files by content) and
    the versions of hubexport and the libraries that build and trace it.

    Recorded in the provenance; export_all does not redo a model whose output
    has the same key.
    """
    import hashlib
    from importlib import metadata

    import hubexport

    request = dataclasses.asdict(plan)
    if request["labels_source"] is None:  # Keys of exports made before the field stay.
        request.pop("labels_source")
    request["weights"].pop("path")
    if request["keras_model"]:
        request["keras_model"].pop("path")
    versions = {"hubexport": hubexport.__version__}
    for distribution in ("tensorflow", "keras", "tf-keras"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    text = json.dumps({"plan": request, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
