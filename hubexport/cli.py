"""hubexport: publish Keras image models as reusable SavedModels.

Usage:
  hubexport export --architecture=MobileNetV2 --task=feature_vector
      --image_size=224 --weights=none --output=DIR [--overwrite]
  hubexport export --keras_model=FILE.keras|FILE.h5 --preprocessing=MODE
      --task=classification [--labels=FILE [--top_k=5]] [--multi_label]
      [--custom_objects=MODULE] --output=DIR
      (also with --architecture; --task=feature_vector takes
      [--feature_layer=NAME] [--pooling=avg|max])
  hubexport export --config=export_configs/NAME.toml --output=DIR
      (flags given beside --config override the file)
  hubexport export ... [--jit_compile]   (inference compiled with XLA; training not)
  hubexport export_all --config_dir=export_configs --output_dir=DIR
      [--weights=none] [--image_size=N | --min_size] [--overwrite]
      [--jobs=N] [--shard=I/N] [--task=T] [--nocheck_exports]
      [--skip_checks=NAME,...] [--json_report=FILE]
      (resumable: a model already exported from the same config, weights
      and library versions is not redone)
  hubexport package DIR [--output=FILE.tar.gz] [--overwrite]
      (the archive tfhub.dev accepted; default DIR.tar.gz beside DIR)
  hubexport check PATH [PATH ...] [--task=auto|feature_vector|classification]
      [--json_report=FILE] [--junit_xml=FILE] [--strict] [--allow_unsafe_ops]
      [--skip_checks=NAME,...] [--jobs=N] [--shard=I/N]
      (a PATH holding SavedModels in its subdirectories checks each of them)
      (exit 0: every model conforms; 1: a model has an error; 2: bad usage)

--task is feature_vector or classification; --weights is imagenet (default),
none, or a file written by model.save_weights.
"""

import logging
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from hubexport import architectures
from hubexport import config as config_lib
from hubexport.errors import UserError, summarize

COMMANDS = ("export", "export_all", "check", "package")

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
    "adds assets/labels.txt and the top_k signature.")
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
_TASK = flags.DEFINE_string(
    "task", None,
    f"export: one of {', '.join(architectures.TASKS)}; export_all: only the configs "
    "of that task; check: auto (default: read from the model's provenance, or "
    "inferred) or one of those.")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None,
    "Height and width in pixels (default: the architecture's default size).")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "imagenet (default), none, or a weights file path.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "export: the SavedModel directory; package: the .tar.gz to write.")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace an existing output directory.")
_CONFIG = flags.DEFINE_string(
    "config", None, "export: a TOML config; flags beside it override it.")
_CONFIG_DIR = flags.DEFINE_string(
    "config_dir", None, "export_all: a directory of TOML configs.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "export_all: writes one SavedModel per config here.")
_MIN_SIZE = flags.DEFINE_boolean(
    "min_size", False,
    "export_all: export each architecture at its smallest size (a quick run of "
    "the whole catalog, as CI does; use with --weights=none).")
_JOBS = flags.DEFINE_integer(
    "jobs", 1,
    "export_all, check: models run at once, each in its own worker process "
    "(never more than the free memory allows).", lower_bound=1)
_SHARD = flags.DEFINE_string(
    "shard", None,
    "export_all, check: I/N runs the I-th of N equal parts (0 <= I < N), e.g. "
    "one per machine of a CI matrix.")
_MEMORY_GB = flags.DEFINE_float(
    "memory_gb", None,
    "export_all, check: memory the running models may use together "
    "(default: what is free at the start, less 0.5 GB).", lower_bound=0)
_CHECK_EXPORTS = flags.DEFINE_boolean(
    "check_exports", True, "export_all: run hubexport check on each export.")
_SKIP_CHECKS = flags.DEFINE_list(
    "skip_checks", [],
    "check, export_all: checks not to run, by name (e.g. tfsm_layer); each is "
    "reported as skipped.")

_JSON_REPORT = flags.DEFINE_string(
    "json_report", None,
    "check: also write the findings as JSON to this file; export_all: the summary.")
_JUNIT_XML = flags.DEFINE_string(
    "junit_xml", None, "check: also write JUnit XML (one test case per check).")
_STRICT = flags.DEFINE_boolean(
    "strict", False, "check: warnings fail the check too.")
_ALLOW_UNSAFE_OPS = flags.DEFINE_boolean(
    "allow_unsafe_ops", False,
    "check: run models whose graphs touch files, processes or the network "
    "(reported as a warning instead of an error).")

# The settings of an export: a config's keys, each also a flag.
_EXPORT_SETTINGS = tuple(config_lib.KEYS)
_FLAGS = (_ARCHITECTURE, _KERAS_MODEL, _PREPROCESSING, _CUSTOM_OBJECTS, _LABELS,
          _TOP_K, _MULTI_LABEL, _FEATURE_LAYER, _POOLING, _JIT_COMPILE, _TASK, _IMAGE_SIZE,
          _WEIGHTS, _OUTPUT, _OVERWRITE, _CONFIG, _CONFIG_DIR, _OUTPUT_DIR, _MIN_SIZE, _JOBS,
          _SHARD, _MEMORY_GB, _CHECK_EXPORTS, _SKIP_CHECKS, _JSON_REPORT, _JUNIT_XML,
          _STRICT, _ALLOW_UNSAFE_OPS)
_MANY = {"jobs", "shard", "memory_gb"}
_ONLY_FOR = {
    "export": {"output", "config", "overwrite", *_EXPORT_SETTINGS},
    "export_all": {"config_dir", "output_dir", "image_size", "weights", "overwrite",
                   "min_size", "task", "check_exports", "skip_checks", "json_report",
                   *_MANY},
    "check": {"task", "json_report", "junit_xml", "strict", "allow_unsafe_ops",
              "skip_checks", *_MANY},
    "package": {"output", "overwrite"},
}


def _say(message):
    print(f"hubexport: {message}", flush=True)


def _export():
    overrides = {
        name: flags.FLAGS[name].value
        for name in _EXPORT_SETTINGS
        if flags.FLAGS[name].present
    }
    settings = config_lib.load(_CONFIG.value) if _CONFIG.value else {}
    settings.update(overrides)
    if "architecture" not in settings and "keras_model" not in settings:
        raise UserError(
            "export needs --architecture=NAME or --keras_model=PATH (or --config=FILE); "
            "e.g. --architecture=MobileNetV2 --task=feature_vector")
    if "task" not in settings:
        raise UserError("export needs --task=feature_vector or --task=classification")
    if not _OUTPUT.value:
        raise UserError("export needs --output=DIR, the SavedModel to write")
    from hubexport import export

    plan = export.plan(**settings)
    result = export.export(plan, _OUTPUT.value, overwrite=_OVERWRITE.value, log=_say)
    print(result.path)
    return 0


def _export_all():
    if not _CONFIG_DIR.value or not _OUTPUT_DIR.value:
        raise UserError(
            "export_all needs --config_dir=DIR and --output_dir=DIR, e.g. "
            "--config_dir=export_configs --output_dir=/tmp/catalog")
    if _MIN_SIZE.value and _IMAGE_SIZE.present:
        raise UserError("--min_size and --image_size contradict each other; pass one")
    overrides = {
        name: flags.FLAGS[name].value
        for name in ("image_size", "weights")
        if flags.FLAGS[name].present
    }
    from hubexport import catalog

    return catalog.export_all(
        _CONFIG_DIR.value, _OUTPUT_DIR.value, overrides, min_size=_MIN_SIZE.value,
        overwrite=_OVERWRITE.value, check=_CHECK_EXPORTS.value, task=_TASK.value,
        skip_checks=_SKIP_CHECKS.value, json_report=_JSON_REPORT.value, log=_say, **_many())


def _many():
    """The scheduling flags of export_all and check."""
    budget = None if _MEMORY_GB.value is None else int(_MEMORY_GB.value * 1e9)
    return {"jobs": _JOBS.value, "shard": _SHARD.value, "memory_budget": budget}


def _check(paths):
    from hubexport import catalog

    return catalog.check_all(
        paths, task=_TASK.value or "auto", json_report=_JSON_REPORT.value,
        junit_xml=_JUNIT_XML.value, strict=_STRICT.value,
        allow_unsafe_ops=_ALLOW_UNSAFE_OPS.value, skip_checks=_SKIP_CHECKS.value, log=_say,
        **_many())


def _package(paths):
    if len(paths) != 1:
        raise UserError(
            f"package takes one SavedModel directory; received {len(paths)} "
            "(e.g. hubexport package models/mobilenet_v2)")
    from hubexport import package

    print(package.package(paths[0], _OUTPUT.value, overwrite=_OVERWRITE.value))
    return 0


def _check_flag_scope(command):
    for name in set().union(*_ONLY_FOR.values()) - _ONLY_FOR[command]:
        if flags.FLAGS[name].present:
            raise UserError(f"--{name} is not a flag of {command}; see hubexport --help")


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = f" {argv[1]!r}" if len(argv) > 1 else ""
        _error(f"unknown command{given}; allowed: {', '.join(COMMANDS)} "
               "(e.g. hubexport export --help)")
        return 2
    command = argv[1]
    quiet_tensorflow()
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.ERROR)
    if len(argv) > 2 and command not in ("check", "package"):
        _error(f"{command} takes no positional arguments; received {argv[2:]}")
        return 2
    try:
        _check_flag_scope(command)
        if command == "check":
            return _check(argv[2:])
        if command == "package":
            return _package(argv[2:])
        return {"export": _export, "export_all": _export_all}[command]()
    except UserError as e:
        _error(str(e))
        return 2
    except KeyboardInterrupt:
        _error("interrupted; no partial output was left behind")
        return 130
    except Exception as e:  # A bug or an environment problem: still one line.
        _error(f"{command} failed: {type(e).__name__}: {summarize(e)}")
        return 1


def _error(message):
    print(f"hubexport: error: {message}", file=sys.stderr, flush=True)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _error(f"{summarize(e)}; see hubexport --help")
        sys.exit(2)


def quiet_tensorflow():
    """Keeps TensorFlow's start-up chatter off the user's terminal.

    TensorFlow's C++ code logs (oneDNN, CUDA probing) before absl::InitializeLog
    runs, where TF_CPP_MIN_LOG_LEVEL does not reach, so stderr is pointed at
    /dev/null while it is imported. Import errors still raise as usual.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interrupt_on_sigterm():
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _help_shows_our_flags():
    # absl's --help prints __main__'s docstring and the key flags of the
    # module named by sys.argv[0], which for a console script is the wrapper.
    sys.modules["__main__"].__doc__ = __doc__
    for holder in _FLAGS:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def run():
    """The console script `hubexport`."""
    _help_shows_our_flags()
    _interrupt_on_sigterm()
    asked_for_help = any(arg in _HELP_FLAGS for arg in sys.argv[1:])
    sys.argv[1:] = ["--help" if arg == "-h" else arg for arg in sys.argv[1:]]
    try:
        app.run(main, flags_parser=_parse_flags)
    except SystemExit as e:
        # absl ends --help with exit status 1; a shell script expects 0.
        if asked_for_help and e.code == 1:
            sys.exit(0)
        raise


if __name__ == "__main__":
    run()
