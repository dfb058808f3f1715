"""hubexport: publish Keras image models as reusable SavedModels.

Usage:
  hubexport export --architecture=MobileNetV2 --task=feature_vector
      --image_size=224 --weights=none --output=DIR [--overwrite]
      (--overwrite replaces only an export of hubexport's; --overwrite_any_saved_model
      any SavedModel directory; never a folder of other files or of the inputs)
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
      [--timeout_s=S] [--memory_gb=G]   (per model; past either it fails, the rest go on)
      (resumable: a model already exported from the same config, weights
      and library versions is not redone)
  hubexport package DIR [--output=FILE.tar.gz] [--overwrite]
      (the archive tfhub.dev accepted; default DIR.tar.gz beside DIR)
  hubexport package DIR --kaggle=OWNER/MODEL/tensorFlow2/VARIATION --output=DIR
      [--license=NAME] [--overwrite]   (the directory a Kaggle Models upload takes:
      the archive's files, model-metadata.json and model-instance-metadata.json)
  hubexport litert DIR [--output=FILE.tflite] [--quantize=none|dynamic|float16|int8]
      [--representative_images=DIR] [--image_size=N] [--overwrite]
      (serving_default only, TFLite builtin ops; the raw-image signatures need Flex
      ops and are not converted; verified in ai_edge_litert against the SavedModel;
      default DIR.tflite beside DIR, with its card DIR.json; needs pip install -e ".[litert]")
  hubexport check PATH [PATH ...] [--task=auto|feature_vector|classification]
      [--json_report=FILE] [--junit_xml=FILE] [--strict] [--allow_unsafe_ops]
      [--skip_checks=NAME,...] [--jobs=N] [--shard=I/N] [--require=litert]
      [--timeout_s=S] [--memory_gb=G]   (per model; it is stopped past either)
      (a PATH holding SavedModels in its subdirectories checks each of them)
      (exit 0: every model conforms; 1: a model has an error; 2: bad usage)

--task is feature_vector or classification; --weights is imagenet (default),
none, or a file written by model.save_weights.
"""

import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

import hubexport
from hubexport import architectures, names, startup
from hubexport import config as config_lib
from hubexport import labels as labels_lib
from hubexport.batch import limits as limits_lib
from hubexport.errors import UserError, is_interrupt, summarize

COMMANDS = ("export", "export_all", "check", "package", "litert")

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
    "output", None, "export: the SavedModel directory; package: the .tar.gz to write "
    "(with --kaggle: the upload directory); litert: the .tflite to write.")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False,
    "export, export_all: replace an existing output that hubexport wrote (a SavedModel "
    "with its assets.extra/hubexport.json) or an empty directory; package: an archive "
    "that hubexport package wrote (--kaggle: an upload directory it wrote, or an empty "
    "one); litert: a .tflite whose card (FILE.json) litert "
    "wrote for it. Anything else is refused, and left as it is.")
_OVERWRITE_ANY_SAVED_MODEL = flags.DEFINE_boolean(
    "overwrite_any_saved_model", False,
    "export, export_all: also replace a SavedModel directory (saved_model.pb and "
    "variables/) that hubexport did not write; package: any .tar.gz holding a "
    "saved_model.pb. Never a directory of other files.")
_KAGGLE = flags.DEFINE_string(
    "kaggle", None,
    "package: OWNER/MODEL/tensorFlow2/VARIATION: write the directory a Kaggle Models "
    "upload takes (to --output=DIR) instead of the archive; --overwrite replaces only "
    "a directory this wrote.")
_LICENSE = flags.DEFINE_string(
    "license", None,
    "package --kaggle: the license, a name of Kaggle's list (e.g. \"Apache 2.0\", "
    "\"MIT\", \"CC BY 4.0\"); required unless the model card states one.")
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
    "export_all, check: the most memory one model may use: a model whose worker "
    "process (with its children) holds more resident memory is stopped, with an error naming "
    f"the check or export that was running (default: {limits_lib.MEMORY_SHARE:.0%} of "
    "this machine's RAM, so it stops before the kernel's out-of-memory killer would). "
    "With --jobs above 1 also what the running models may use together (default "
    "there: what is free at the start, less 0.5 GB).", lower_bound=0)
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
_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", ["none", "dynamic", "float16", "int8"],
    "litert: none (float32, verified to 1e-4 against the SavedModel), dynamic (int8 "
    "weights), float16 (float16 weights) or int8 (integer kernels, calibrated on "
    "--representative_images; float32 input and output); quantized models report "
    "their difference and, for classification, top-1 and top-5 agreement.")
_REPRESENTATIVE_IMAGES = flags.DEFINE_string(
    "representative_images", None,
    "litert: a folder of JPEG/PNG/GIF/BMP files, decoded and resized as "
    "serving_image_bytes does; compared on (default: 4 random images) and, for "
    "--quantize=int8 (required there), calibrated on.")
_REQUIRE = flags.DEFINE_list(
    "require", [],
    "check: optional consumers whose checks must pass: their warnings (and a check "
    "that could not run, e.g. without the extra) become errors. Allowed: litert "
    "(the litert_conversion check).")
_TIMEOUT_S = flags.DEFINE_float(
    "timeout_s", None,
    "check, export_all: seconds one model may take (each model runs in a worker "
    "process, stopped past it with an error naming the check or export that was "
    "running; the checks that ended keep their findings). Default: check "
    f"{limits_lib.DEFAULT_TIMEOUT_S:g}, more than 3x the catalog's longest check at full "
    "size on a slow, busy machine (about 530 s; 200 s quiet: ResNetRS420 at 320, "
    f"EfficientNetB7 at 600); export_all {limits_lib.EXPORT_TIMEOUT_S:g} for a model's "
    "export and check together, more than 6x the slowest full-size catalog model's "
    "(205 s quiet, about 550 s slow and beside another).", lower_bound=1)

# The settings of an export: a config's keys, each also a flag.
_EXPORT_SETTINGS = tuple(config_lib.KEYS)
_FLAGS = (_ARCHITECTURE, _KERAS_MODEL, _PREPROCESSING, _CUSTOM_OBJECTS, _LABELS,
          _TOP_K, _MULTI_LABEL, _FEATURE_LAYER, _POOLING, _JIT_COMPILE, _TASK, _IMAGE_SIZE,
          _WEIGHTS, _OUTPUT, _OVERWRITE, _OVERWRITE_ANY_SAVED_MODEL, _CONFIG, _CONFIG_DIR, _OUTPUT_DIR, _MIN_SIZE, _JOBS,
          _SHARD, _MEMORY_GB, _CHECK_EXPORTS, _SKIP_CHECKS, _JSON_REPORT, _JUNIT_XML,
          _STRICT, _ALLOW_UNSAFE_OPS, _TIMEOUT_S, _QUANTIZE, _REPRESENTATIVE_IMAGES, _REQUIRE,
          _KAGGLE, _LICENSE)
_MANY = {"jobs", "shard", "memory_gb", "timeout_s"}
_ONLY_FOR = {
    "export": {"output", "config", "overwrite", "overwrite_any_saved_model", *_EXPORT_SETTINGS},
    "export_all": {"config_dir", "output_dir", "image_size", "weights", "overwrite",
                   "overwrite_any_saved_model",
                   "min_size", "task", "check_exports", "skip_checks", "json_report",
                   *_MANY},
    "check": {"task", "json_report", "junit_xml", "strict", "allow_unsafe_ops",
              "skip_checks", "require", *_MANY},
    "package": {"output", "overwrite", "overwrite_any_saved_model", "kaggle", "license"},
    "litert": {"output", "overwrite", "quantize", "representative_images", "image_size"},
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
    replace = dict(overwrite=_OVERWRITE.value,
                   overwrite_any_saved_model=_OVERWRITE_ANY_SAVED_MODEL.value,
                   inputs=(_CONFIG.value, labels_lib.source_file(settings.get("labels"))))
    output = export.check_destination(plan, _OUTPUT.value, **replace)  # Before TF loads.
    startup.quiet_tensorflow()
    result = export.export(plan, output, log=_say, **replace)
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
    limits = _limits(limits_lib.EXPORT_TIMEOUT_S)
    from hubexport import catalog, checker

    checker.validate("auto", json_report=_JSON_REPORT.value)  # Writable, before any work.
    startup.quiet_tensorflow()
    return catalog.export_all(
        _CONFIG_DIR.value, _OUTPUT_DIR.value, overrides, min_size=_MIN_SIZE.value,
        overwrite=_OVERWRITE.value, overwrite_any_saved_model=_OVERWRITE_ANY_SAVED_MODEL.value,
        check=_CHECK_EXPORTS.value, task=_TASK.value, skip_checks=_SKIP_CHECKS.value,
        json_report=_JSON_REPORT.value, log=_say, limits=limits, **_many())


def _many():
    """The scheduling flags of export_all and check."""
    budget = None if _MEMORY_GB.value is None else int(_MEMORY_GB.value * 1e9)
    return {"jobs": _JOBS.value, "shard": _SHARD.value, "memory_budget": budget}


def _check(paths):
    limits = _limits(limits_lib.DEFAULT_TIMEOUT_S)
    from hubexport import catalog, checker

    # Paths and report files are refused before TensorFlow is imported (check
    # names need it: hubexport.check defines them).
    if _SKIP_CHECKS.value:
        startup.quiet_tensorflow()
    checker.validate(_TASK.value or "auto", _JSON_REPORT.value, _JUNIT_XML.value,
                     _SKIP_CHECKS.value, paths=paths, require=_REQUIRE.value)
    startup.quiet_tensorflow()
    if _REQUIRE.value:
        return _check_requiring(paths, limits)
    return catalog.check_all(
        paths, task=_TASK.value or "auto", json_report=_JSON_REPORT.value,
        junit_xml=_JUNIT_XML.value, strict=_STRICT.value,
        allow_unsafe_ops=_ALLOW_UNSAFE_OPS.value, skip_checks=_SKIP_CHECKS.value, log=_say,
        limits=limits, **_many())


def _check_requiring(paths, limits):
    """check --require: catalog.check_all's one-job path (checker.run, which
    applies the requirement to each report); the workers of --jobs do not take
    it yet."""
    from hubexport import catalog, checker

    if _JOBS.value > 1:
        raise UserError("--require runs with --jobs=1 for now; leave --jobs out, or run "
                        "without --require")
    from hubexport.batch import state

    models = catalog.saved_models(paths)  # The same models and shards as check_all's.
    models = catalog.select_shard(models, _SHARD.value, state.bytes_on_disk)
    if not models:
        _say(f"shard {_SHARD.value} has no models")
        return 0
    return checker.run(models, _TASK.value or "auto", _JSON_REPORT.value, _JUNIT_XML.value,
                       _STRICT.value, _ALLOW_UNSAFE_OPS.value, skip=tuple(_SKIP_CHECKS.value),
                       limits=limits, log=_say, require=tuple(_REQUIRE.value))


def _limits(default_seconds):
    """The limits per model: --timeout_s (or `default_seconds`), and --memory_gb or
    most of the RAM (limits.requested refuses a value that is no limit)."""
    return limits_lib.requested(_TIMEOUT_S.value, _MEMORY_GB.value, default_seconds)


def _package(paths):
    if len(paths) != 1:
        raise UserError(
            f"package takes one SavedModel directory; received {len(paths)} "
            "(e.g. hubexport package models/mobilenet_v2)")
    if _KAGGLE.value is not None:
        return _package_for_kaggle(paths[0])
    if _LICENSE.value is not None:
        raise UserError("--license is a flag of package --kaggle only (a tfhub.dev "
                        "archive's license is its card's license line); add "
                        "--kaggle=OWNER/MODEL/tensorFlow2/VARIATION or drop --license")
    from hubexport.publish import package

    print(package.package(paths[0], _OUTPUT.value, overwrite=_OVERWRITE.value,
                          overwrite_any_saved_model=_OVERWRITE_ANY_SAVED_MODEL.value))
    return 0


def _package_for_kaggle(directory):
    if _OVERWRITE_ANY_SAVED_MODEL.value:
        raise UserError("--overwrite_any_saved_model is not for package --kaggle: it "
                        "replaces only a directory it wrote (--overwrite)")
    from hubexport.publish import kaggle

    print(kaggle.package(directory, _KAGGLE.value, _OUTPUT.value,
                         license_name=_LICENSE.value, overwrite=_OVERWRITE.value, log=_say))
    return 0


def _litert(paths):
    if len(paths) != 1:
        raise UserError(
            f"litert takes one SavedModel directory; received {len(paths)} "
            "(e.g. hubexport litert models/mobilenet_v2)")
    from hubexport.publish import litert

    litert.interpreter_class()  # The missing extra is refused before TensorFlow loads.
    startup.quiet_tensorflow()
    result = litert.convert(paths[0], _OUTPUT.value, _QUANTIZE.value,
                            _REPRESENTATIVE_IMAGES.value, _IMAGE_SIZE.value,
                            overwrite=_OVERWRITE.value, log=_say)
    print(result.summary)
    return 0


def _check_flag_scope(command):
    for name in set().union(*_ONLY_FOR.values()) - _ONLY_FOR[command]:
        if flags.FLAGS[name].present:
            raise UserError(
                f"--{name} is not a flag of {command}; see hubexport {command} --help")


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = f" {argv[1]!r}" if len(argv) > 1 else ""
        _error(f"unknown command{given}; allowed: {', '.join(COMMANDS)} "
               "(e.g. hubexport export --help)")
        return 2
    command = argv[1]
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.ERROR)
    if len(argv) > 2 and command not in ("check", "package", "litert"):
        _error(f"{command} takes no positional arguments; received {argv[2:]}")
        return 2
    try:
        _check_flag_scope(command)
        if command == "check":
            return _check(argv[2:])
        if command == "package":
            return _package(argv[2:])
        if command == "litert":
            return _litert(argv[2:])
        return {"export": _export, "export_all": _export_all}[command]()
    except UserError as e:
        _error(str(e))
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as e:  # A bug or an environment problem: still one line.
        if is_interrupt(e):
            return _interrupted()
        _error(f"{command} failed: {type(e).__name__}: {summarize(e)}")
        return 1


def _interrupted():
    _error("interrupted; no partial output was left behind")
    return 130


def _error(message):
    print(f"hubexport: error: {message}", file=sys.stderr, flush=True)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _error(f"{summarize(e)}; see hubexport --help")
        sys.exit(2)


def _help_shows_our_flags():
    # For --helpfull (absl's; --help is help_text): absl prints __main__'s docstring
    # and the flags of the module named by sys.argv[0], for a console script the wrapper.
    sys.modules["__main__"].__doc__ = __doc__
    for holder in _FLAGS:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")  # Ours; absl's --helpfull lists all.


def help_text(args):
    """What --help prints: a command's usage and flags, or (no command) the overview."""
    words = [arg for arg in args if not arg.startswith("-")]
    command = words[0] if words and words[0] in COMMANDS else None
    if command is None:
        return (f"{__doc__}\nhubexport COMMAND --help lists the flags of one command "
                "(--helpfull: every flag, absl's too); hubexport --version its version.")
    lines = ["Usage:", *_usage_of(command), "", f"flags of {command}:"]
    lines += [_flag_help(flags.FLAGS[name]) for name in sorted(_ONLY_FOR[command])]
    return "\n".join(lines)


def _usage_of(command):
    """The lines of this module's Usage (its docstring) that show `command`."""
    shown, keep = [], False
    for line in __doc__.splitlines():
        if line.startswith("  hubexport "):
            keep = line.startswith(f"  hubexport {command} ")
        elif not line.startswith("      "):
            keep = False
        shown += [line] if keep else []
    return shown


def _flag_help(flag):
    """One flag as absl's --help shows it, plus the names it takes (_CHOICES)."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flag.help + (f" Allowed: {_CHOICES[flag.name]()}." if flag.name in _CHOICES else "")
    notes = [f"(default: {flag.default_as_str})"] if flag.default_as_str else []
    notes += [f"({flag.parser.syntactic_help})"] if flag.parser.syntactic_help else []
    return "\n".join([flags.text_wrap(f"{name}: {text}", indent="    ", firstline_indent="  "),
                      *(flags.text_wrap(note, indent="    ") for note in notes)])


def check_names():
    """The names of the checks in the order they run: hubexport.check.ORDER,
    which imports no TensorFlow (the checks do, seconds too many for --help;
    a test pins the two equal)."""
    from hubexport import check

    return list(check.ORDER)


# The flags whose help lists the names they take, computed only for --help.
_CHOICES = {
    "architecture": lambda: names.compact(architectures.ARCHITECTURES),
    "skip_checks": lambda: ", ".join(check_names()),
}


def run():
    """The console script `hubexport`."""
    startup.interrupt_on_sigterm()
    if "--version" in sys.argv[1:]:
        print(f"hubexport {hubexport.__version__}")
        sys.exit(0)
    if any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
        print(help_text(sys.argv[1:]))
        sys.exit(0)
    _help_shows_our_flags()
    try:
        app.run(main, flags_parser=_parse_flags)
    except SystemExit as e:
        # absl ends --helpfull with exit status 1; a shell script expects 0.
        if "--helpfull" in sys.argv[1:] and e.code == 1:
            sys.exit(0)
        raise


if __name__ == "__main__":
    run()
