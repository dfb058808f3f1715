"""The one exception type that means "the user asked for something we refuse", and
how other exceptions are told in one line."""


class UserError(ValueError):
    """A mistake in what the user asked for.

    The message is one line: what was wrong, what is allowed, how to fix it.
    The CLI prints it without a traceback and exits non-zero.
    """


def summarize(error, limit=300):
    """An exception's message on one line: its first two non-empty lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]).rstrip(".") or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_interrupt(error):
    """Whether `error` is a Ctrl-C (or SIGTERM) that a library wrapped on its way up.

    A KeyboardInterrupt raised inside a Python callback of TensorFlow's C++
    code comes back as `RuntimeError: pybind11::error_already_set: MISMATCH of
    original and normalized active exception types: ORIGINAL KeyboardInterrupt
    REPLACED BY KeyboardInterrupt`, or with the interrupt as its cause.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt):
            return True
        if isinstance(error, RuntimeError) and "KeyboardInterrupt" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
