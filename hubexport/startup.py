"""What a hubexport process (the CLI, a batch worker) does as it starts; no TensorFlow import
until asked for.

    startup.interrupt_on_sigterm()   # SIGTERM unwinds as Ctrl-C does
    startup.raise_if_interrupted()   # before an install: a library may have swallowed it
    startup.quiet_tensorflow()       # imports TensorFlow without its start-up chatter
"""

import logging
import os
import signal
import sys


_interrupted = False


def _interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def interrupt_on_sigterm():
    """SIGTERM raises KeyboardInterrupt, so that what is running unwinds (a running
    export removes its staging directory) as on Ctrl-C; both are remembered for
    raise_if_interrupted."""
    global _interrupted
    _interrupted = False
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def raise_if_interrupted():
    """Raises KeyboardInterrupt if SIGTERM or Ctrl-C arrived since
    interrupt_on_sigterm(), even if the KeyboardInterrupt it raised was swallowed
    on its way up: raised inside a __del__, Python prints "Exception ignored in"
    and goes on (TensorFlow's ConcreteFunctionGarbageCollector.__del__ runs
    during a save). hubexport.atomic calls it before every install, so an
    interrupted process never puts a new output in place."""
    if _interrupted:
        raise KeyboardInterrupt


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
