"""Named benchmark suites, run by ``xgir bench NAME``.

Every module in this package that defines ``SUITE = "name"`` and
``run(out: Path, seeds: list[int], quick: bool = False) -> dict`` is a suite.
A suite writes its results folder (JSON metrics, a Markdown table ``report.md``,
PNG figures) and returns its metrics.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Iterator, Sequence
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
    return ("Mean ± sample standard deviation (ddof 1) over seeds." if n_seeds > 1
            else "One seed: each cell is that run's value (no spread).")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value); NaN and None are left out.

    >>> m, s = mean_std([0.7, 0.8, 0.9, float("nan")])
    >>> round(m, 6), round(s, 6)
    (0.8, 0.1)
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` of ``values``; the value alone when there is one (no spread to show).

    >>> fmt([0.7, 0.8, 0.9]), fmt([0.5]), fmt([])
    ('0.800 ± 0.100', '0.500', '-')
    """
    m, s = mean_std(values)
    if math.isnan(m):
        return "-"
    if sum(1 for v in values if v is not None and not math.isnan(float(v))) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


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
