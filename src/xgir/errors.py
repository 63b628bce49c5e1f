"""User-facing errors: one line saying what is wrong and how to fix it."""


class XgirError(ValueError):
    """An error caused by the user's input (shapes, names, files, configs); a ``ValueError``, so
    code that handles bad values in general handles it too.

    The CLI prints its message on one line and exits with status 2, without a traceback.
    """


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (for the user, not a Python warning)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
