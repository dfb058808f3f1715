"""The flags that several commands take (each help says which), and say()."""

from absl import flags

from hubexport import architectures

TASK = flags.DEFINE_string(
    "task", None,
    f"export: one of {', '.join(architectures.TASKS)}; export_all: only the configs "
    "of that task; check: auto (default: read from the model's provenance, or "
    "inferred) or one of those.")
IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None,
    "Height and width in pixels (default: the architecture's default size; litert: "
    "serving_default's own size, else the size the model was exported at).")
WEIGHTS = flags.DEFINE_string(
    "weights", None, "imagenet (default), none, or a weights file path.")
OUTPUT = flags.DEFINE_string(
    "output", None, "export: the SavedModel directory; package: the .tar.gz to write "
    "(with --kaggle: the upload directory); litert: the .tflite to write.")
OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False,
    "export, export_all: replace an existing output that hubexport wrote (a SavedModel "
    "with its assets.extra/hubexport.json) or an empty directory; package: an archive "
    "that hubexport package wrote (--kaggle: an upload directory it wrote, or an empty "
    "one); litert: a .tflite whose card (FILE.json) litert "
    "wrote for it. Anything else is refused, and left as it is.")
OVERWRITE_ANY_SAVED_MODEL = flags.DEFINE_boolean(
    "overwrite_any_saved_model", False,
    "export, export_all: also replace a SavedModel directory (saved_model.pb and "
    "variables/) that hubexport did not write; package: any .tar.gz holding a "
    "saved_model.pb. Never a directory of other files.")
SKIP_CHECKS = flags.DEFINE_list(
    "skip_checks", [],
    "check, export_all: checks not to run, by name (e.g. tfsm_layer); each is "
    "reported as skipped.")
JSON_REPORT = flags.DEFINE_string(
    "json_report", None,
    "check: also write the findings as JSON to this file; export_all: the summary.")


def say(message):
    """A progress line of a command, on stdout (errors go to stderr: hubexport.cli)."""
    print(f"hubexport: {message}", flush=True)
