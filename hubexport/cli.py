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
from hubexport import architectures, commands, names, startup
from hubexport.errors import UserError, is_interrupt, summarize

# The dispatch and the help are here; each command, with the flags only it
# takes, is a module of hubexport.commands.
COMMANDS = tuple(commands.MODULES)  # export, export_all, check, package, litert
_ONLY_FOR = commands.ONLY_FOR  # {command: the names of the flags it takes}
_TAKE_PATHS = ("check", "package", "litert")


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
    if len(argv) > 2 and command not in _TAKE_PATHS:
        _error(f"{command} takes no positional arguments; received {argv[2:]}")
        return 2
    try:
        _check_flag_scope(command)
        run_command = commands.MODULES[command].run
        return run_command(argv[2:]) if command in _TAKE_PATHS else run_command()
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
    for name in sorted(set().union(*_ONLY_FOR.values())):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


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
