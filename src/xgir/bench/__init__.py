"""Named benchmark suites, run by ``xgir bench NAME``.

Every module in this package that defines ``SUITE = "name"`` and
``run(out: Path, seeds: list[int], quick: bool = False) -> dict`` is a suite.
A suite writes its results folder (JSON metrics, a Markdown table ``report.md``,
PNG figures) and returns its metrics.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from xgir.errors import XgirError


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, restoring the previous count after: the suites' models and heads
    are tiny, and on a shared CPU one thread is several times faster than several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spread_note(n_seeds: int) -> str:
    """The sentence under a suite's table: what the cells hold."""
    return "Mean ± std over seeds." if n_seeds > 1 else "One seed: each cell is that run's value (no spread)."


def suites() -> dict[str, ModuleType]:
    """Suite name -> module."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "SUITE", None)
        if name is not None:
            found[name] = module
    return found


def get_suite(name: str) -> ModuleType:
    found = suites()
    if name not in found:
        raise XgirError(f"unknown benchmark suite '{name}'; choose one of: {', '.join(sorted(found)) or '(none)'}")
    return found[name]
