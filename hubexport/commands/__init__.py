"""The commands of `hubexport`, one module each, with the flags only it takes.

    export       export one model (a keras.applications name, a config, or a .keras file)
    export_all   export and check a directory of configs
    check        check SavedModels against the contract
    package      the tfhub.dev archive, or a Kaggle Models upload directory
    litert       convert serving_default to LiteRT (TFLite)
    shared       the flags several commands take, and say()
    many         the scheduling and limit flags of export_all and check

Each command module defines FLAG_NAMES (the flags it takes: its --help lists
them, any other is refused) and run(); hubexport.cli parses and dispatches.
Importing any of them imports no TensorFlow, so --help and usage errors are
instant: each run() imports what does its work.
"""

from hubexport.commands import check, export, export_all, litert, package

MODULES = {"export": export, "export_all": export_all, "check": check,
           "package": package, "litert": litert}
ONLY_FOR = {name: module.FLAG_NAMES for name, module in MODULES.items()}
