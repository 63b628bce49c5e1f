"""Errors under ``torchrun``: one line, printed by rank 0 alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def rank0_prints_errors() -> Iterator[None]:
    """On a rank other than 0, a user error (the same line rank 0 prints, or rank 0's
    ``rank R: ...`` naming the failed rank) exits with status 2 silently, so the run shows
    one ``error:`` line, not one per process."""
    from xgir.cli import user_error_message

    try:
        yield
    except Exception as err:
        if int(os.environ.get("RANK", "0")) > 0 and user_error_message(err) is not None:
            raise typer.Exit(2) from None
        raise
