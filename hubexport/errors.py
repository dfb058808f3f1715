"""The one exception type that means "the user asked for something we refuse"."""


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
