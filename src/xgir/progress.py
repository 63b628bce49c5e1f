"""Progress for long steps: a live tqdm bar on a terminal, plain lines in a log.

When stderr is a terminal, :class:`Progress` draws a tqdm bar that disappears when done.
When it is not (``xgir train > log 2>&1``, CI), it writes one plain line at most every
``interval`` seconds (30 s; ``$XGIR_PROGRESS_INTERVAL``; later lines are spaced by a tenth of the
time spent), one at the end of an epoch if a few seconds have passed, and a final line with the
totals: no carriage returns, no cursor codes.
``$XGIR_PROGRESS`` = ``bar``, ``plain`` or ``off`` overrides the choice.

:func:`observed` lets a caller follow every :class:`Progress` made in its thread (the app shows
a long explainer's progress this way), whatever the bar's mode.

    with Progress(total=steps, desc="train") as bar:
        for ...:
            bar.update(1, loss=f"{loss:.3f}")
        bar.epoch_end(epoch=3, loss="0.41")
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _mode(enabled: bool) -> str:
    if not enabled:
        return "off"
    forced = os.environ.get("XGIR_PROGRESS", "").strip().lower()
    if forced in ("bar", "plain", "off"):
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("XGIR_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


_observers = threading.local()
Observer = Callable[[int, int | None, str], None]


@contextlib.contextmanager
def observed(callback: Observer) -> Iterator[None]:
    """Within the block, every :class:`Progress` of this thread calls ``callback(n, total, desc)``
    when it starts and on each update (also with the bar off)."""
    previous = getattr(_observers, "callback", None)
    _observers.callback = callback
    try:
        yield
    finally:
        _observers.callback = previous


def _notify(p: Progress) -> None:
    callback = getattr(_observers, "callback", None)
    if callback is not None:
        callback(p.n, p.total, p.desc)


def _fmt_postfix(postfix: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in postfix.items())


class Progress:
    """Progress of ``total`` steps (None: unknown) named ``desc``; see the module docstring."""

    def __init__(self, total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "step",
                 epoch_gap: float = 5.0, initial: int = 0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.mode = _mode(enabled)
        self.interval = _interval()
        self.epoch_gap = min(epoch_gap, self.interval)
        self.n = initial
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, unit=unit, file=sys.stderr, initial=initial)
        _notify(self)

    def add_total(self, n: int) -> None:
        """``n`` more steps to do (when the total grows while working)."""
        self.total = (self.total or 0) + n
        _notify(self)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def set_postfix(self, **postfix: Any) -> None:
        """Values shown beside the count (tqdm's name for it)."""
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    def _line(self, text: str) -> None:
        print(f"[xgir] {self.desc}: {text}", file=sys.stderr, flush=True)
        self.last = time.monotonic()

    def _units(self, n: int) -> str:
        return self.unit if n == 1 else f"{self.unit}s"

    def _due(self, gap: float) -> bool:
        """Time for a plain line: ``gap`` seconds since the last, and a tenth of the time spent so
        far (so an hour-long step writes a few dozen lines, not a hundred)."""
        now = time.monotonic()
        return now - self.last >= max(gap, 0.1 * (now - self.start))

    def _status(self) -> str:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = _fmt_postfix(self.postfix)
        seconds = time.monotonic() - self.start
        return f"{done} {self._units(self.total or self.n)}{pct}, {seconds:.0f} s" + (f", {tail}" if tail else "")

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more steps done; ``postfix`` values are shown beside the count."""
        self.n += n
        _notify(self)
        if postfix:
            self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(self.postfix, refresh=False)
        elif self.mode == "plain" and self._due(self.interval):
            self._line(self._status())

    def epoch_end(self, **postfix: Any) -> None:
        """End of an epoch (or round): a plain line if a few seconds have passed since the last."""
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.set_postfix(self.postfix)
        elif self.mode == "plain" and self._due(self.epoch_gap):
            self._line(self._status())

    def close(self, result: str | None = None) -> None:
        """Remove the bar; off a terminal, a final line (with ``result`` if given)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "plain":
            seconds = time.monotonic() - self.start
            tail = result if result is not None else _fmt_postfix(self.postfix)
            count = f", {self.n} {self._units(self.n)}" if self.n or self.total else ""
            self._line(f"done{count} in {seconds:.1f} s" + (f", {tail}" if tail else ""))
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # interrupted or failed: no "done" line
            if self._bar is not None:
                self._bar.close()
            self.mode = "off"


def iterate(items: Iterable[T], desc: str = "", enabled: bool = True, total: int | None = None,
            unit: str = "step") -> Iterator[T]:
    """``items`` with a :class:`Progress` (total from ``len(items)`` when it has one)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total=total, desc=desc, enabled=enabled, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def step(desc: str, enabled: bool = True) -> Progress:
    """A step without a count (building a dataset, extracting features): one line when it starts
    and one with its time when it ends (on a terminal too: there is no bar to draw).
    Use as ``with step("building glyph-pretrain/train"): ...``."""
    p = Progress(total=None, desc=desc, enabled=False)
    if _mode(enabled) != "off":
        p.mode = "plain"
        p._line("started")
    return p
