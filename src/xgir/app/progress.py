"""Progress of the explanations the app computes: the page names a run (``run=TOKEN`` on
``explain.png``) and polls ``/api/progress/TOKEN`` while it waits.

A run counts the images its model evaluates (a forward hook) and listens to the explainers'
own :class:`xgir.progress.Progress` (RISE, LIME, IASSA, Score-CAM, Ablation-CAM report their
steps); the fraction done comes from those steps, else from the images against the number the
method needs (IG: n_steps, expected gradients: n_samples, occlusion: window positions).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from xgir.errors import XgirError

TOKEN = re.compile(r"[A-Za-z0-9_-]{1,40}")
KEEP = 64  # runs remembered


@dataclass
class Run:
    """One explanation being computed; ``stage``: waiting, computing or done."""

    method: str
    expected_images: int | None = None
    stage: str = "waiting for the model"
    images: int = 0
    steps: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    error: str = ""

    def fraction(self) -> float | None:
        if self.finished is not None:
            return 1.0
        if self.total:
            return min(1.0, self.steps / self.total)
        if self.expected_images:
            return min(0.99, self.images / self.expected_images)
        return None

    def public(self) -> dict[str, Any]:
        seconds = (self.finished or time.monotonic()) - self.started
        frac = self.fraction()
        done = f"{100 * frac:.0f}%" if frac is not None else f"{self.images} model images"
        return {"method": self.method, "stage": self.stage, "fraction": frac, "images": self.images,
                "seconds": round(seconds, 1), "status": "done" if self.finished is not None else "running",
                "error": self.error, "text": f"{self.method}: {self.stage}, {done}, {seconds:.0f} s"}


class Runs:
    """The runs by token (the last :data:`KEEP`), thread-safe."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, token: str, run: Run) -> Run:
        with self._lock:
            self._runs[token] = run
            while len(self._runs) > KEEP:
                self._runs.popitem(last=False)
        return run

    def get(self, token: str) -> Run | None:
        with self._lock:
            return self._runs.get(token)


def check_token(token: str) -> str:
    if not TOKEN.fullmatch(token):
        raise XgirError("run must be 1-40 letters, digits, - or _")
    return token


def expected_images(method: str, params: dict[str, Any], height: int, width: int) -> int | None:
    """Images the model evaluates for one target of ``method``, where that is known in advance."""
    if method == "ig":
        return int(params.get("n_steps", 50))
    if method == "expected-gradients":
        return int(params.get("n_samples", 32))
    if method == "occlusion":
        from xgir.explain.gradient import Occlusion

        return int(Occlusion(window=params.get("window"), stride=params.get("stride")).geometry(height, width)[2])
    return None


@contextlib.contextmanager
def tracking(run: Run | None, model: nn.Module) -> Iterator[None]:
    """While the block computes, count ``model``'s images and the explainer's progress steps into ``run``."""
    if run is None:
        yield
        return
    from xgir.progress import observed

    def count(_m: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        shape = getattr(args[0], "shape", None) if args else None
        run.images += int(shape[0]) if shape else 1

    def steps(n: int, total: int | None, desc: str) -> None:
        run.steps, run.total = n, total

    run.stage = "computing"
    handle = model.register_forward_hook(count)
    try:
        with observed(steps):
            yield
    except Exception as err:
        run.error = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise
    finally:
        handle.remove()
        run.stage, run.finished = "done", time.monotonic()
