"""`hubexport export`: one model to a verified SavedModel, from flags or a config."""

from absl import flags

from hubexport import config as config_lib
from hubexport import labels as labels_lib
from hubexport import startup
from hubexport.commands.shared import OUTPUT, OVERWRITE, OVERWRITE_ANY_SAVED_MODEL, say
from hubexport.errors import UserError

_ARCHITECTURE = flags.DEFINE_string(
    "architecture", None, "A keras.applications name, e.g. MobileNetV2.")
_KERAS_MODEL = flags.DEFINE_string(
    "keras_model", None,
    "export: your own model instead of --architecture: a .keras or Keras 2 .h5 file.")
_PREPROCESSING = flags.DEFINE_string(
    "preprocessing", None,
    "export --keras_model: the input the model expects: caffe, tf, torch (as in "
    "keras.applications), raw255 (0..255 RGB) or unit ([0, 1] RGB).")
_CUSTOM_OBJECTS = flags.DEFINE_string(
    "custom_objects", None,
    "export --keras_model: a Python module defining the model's custom layers.")
_LABELS = flags.DEFINE_string(
    "labels", None,
    "export classification: a text file, one label per line (line 1 = class 0); "
    "adds assets/labels.txt and the top_k signature. imagenet: Keras' 1000 ImageNet "
    "class names (imagenet_class_index.json, fetched and cached as decode_predictions "
    "does; only with --weights=imagenet; ./imagenet for a file of that name).")
_TOP_K = flags.DEFINE_integer(
    "top_k", None, "export with --labels: how many classes top_k returns (default 5).")
_MULTI_LABEL = flags.DEFINE_boolean(
    "multi_label", False,
    "export classification: the logits are for a sigmoid (independent classes), "
    "not a softmax; implied by a model whose last layer applies sigmoid.")
_FEATURE_LAYER = flags.DEFINE_string(
    "feature_layer", None,
    "export feature_vector: export this named layer's output (e.g. block4_pool).")
_POOLING = flags.DEFINE_string(
    "pooling", None, "export feature_vector: avg (default) or max global pooling.")
_JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile", False,
    "export: compile the inference path (training=False, serving signatures) with "
    "XLA; training stays uncompiled.")
_CONFIG = flags.DEFINE_string(
    "config", None, "export: a TOML config; flags beside it override it.")

# The settings of an export: a config's keys, each also a flag (--task,
# --image_size and --weights are hubexport.commands.shared's).
SETTINGS = tuple(config_lib.KEYS)
FLAG_NAMES = {"output", "config", "overwrite", "overwrite_any_saved_model", *SETTINGS}


def run():
    settings = config_lib.load(_CONFIG.value) if _CONFIG.value else {}
    settings.update({name: flags.FLAGS[name].value for name in SETTINGS
                     if flags.FLAGS[name].present})
    if "architecture" not in settings and "keras_model" not in settings:
        raise UserError(
            "export needs --architecture=NAME or --keras_model=PATH (or --config=FILE); "
            "e.g. --architecture=MobileNetV2 --task=feature_vector")
    if "task" not in settings:
        raise UserError("export needs --task=feature_vector or --task=classification")
    if not OUTPUT.value:
        raise UserError("export needs --output=DIR, the SavedModel to write")
    from hubexport import export

    plan = export.plan(**settings)
    replace = dict(overwrite=OVERWRITE.value,
                   overwrite_any_saved_model=OVERWRITE_ANY_SAVED_MODEL.value,
                   inputs=(_CONFIG.value, labels_lib.source_file(settings.get("labels"))))
    output = export.check_destination(plan, OUTPUT.value, **replace)  # Before TF loads.
    startup.quiet_tensorflow()
    result = export.export(plan, output, log=say, **replace)
    print(result.path)
    return 0
