"""What a hubexport process (the CLI, a batch worker) does as it starts; no TensorFlow import
until asked for.

    startup.interrupt_on_sigterm()   # SIGTERM unwinds as Ctrl-C does
    startup.quiet_tensorflow()       # imports TensorFlow without its start-up chatter
"""

import logging
import os
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupt_on_sigterm():
    """SIGTERM raises KeyboardInterrupt, so that what is running unwinds (a running
    export removes its staging directory) as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)


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
