"""The ``xgir`` command line.

Each module in this package that defines ``register(app: typer.Typer)`` adds its
commands; :func:`main` runs the app and turns user errors into one line on
stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
import sys

import typer

app = typer.Typer(
    name="xgir",
    help="Explain image classifiers and use the explanations to correct them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from xgir import __version__

        typer.echo(f"xgir {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Explain image classifiers and use the explanations to correct them."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def user_error_message(err: BaseException) -> str | None:
    """One-line message for errors caused by the user's input; None for bugs."""
    from pydantic import ValidationError

    from xgir.errors import XgirError

    if isinstance(err, XgirError):
        return str(err)
    if isinstance(err, ValidationError):
        from xgir.config import format_validation_error

        return format_validation_error(err)
    if isinstance(err, IsADirectoryError):
        return f"{err.filename or err} is a directory; give a file"
    if isinstance(err, FileNotFoundError):
        return f"file not found: {err.filename or err}"
    if isinstance(err, PermissionError):
        return f"no permission to use {err.filename or err} ({err.strerror}); check its permissions or give " \
               "another path"
    if isinstance(err, OSError) and err.errno in _FILE_SYSTEM_ERRORS:
        return f"{err.filename or 'a file'}: {err.strerror}; give another path (or make room on a full disk)"
    return None


# errors of the file system rather than of xgir: read-only, full, over quota, a symlink loop
_FILE_SYSTEM_ERRORS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ELOOP, errno.ENAMETOOLONG}


INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xgir`` script: the command's exit status (0 done, 2 bad input,
    130 interrupted with one line on stderr)."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except SystemExit as exit_:  # pragma: no cover - typer's own exits
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except BaseException as err:  # noqa: BLE001 - the CLI boundary
        kind = type(err).__name__
        if kind == "Exit":  # typer/click normal exit
            return int(getattr(err, "exit_code", 0))
        if hasattr(err, "show") and hasattr(err, "exit_code"):  # usage errors: click prints them
            err.show()
            return 2
        if kind == "Abort":
            print("error: aborted", file=sys.stderr)
            return 1
        message = user_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    # in non-standalone mode typer returns the exit code of typer.Exit / ctx.exit, and turns
    # Ctrl-C into Exit(130)
    if isinstance(rv, int) and not isinstance(rv, bool):
        if rv == INTERRUPTED:
            print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return rv
    return 0
