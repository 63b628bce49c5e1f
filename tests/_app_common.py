"""Shared by the app tests: one tiny Bayesian LeNet on decoy-digits (trained once per session)
and an app state on 100 training images with its own feedback store."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

N_IMAGES = 100


@functools.lru_cache(maxsize=1)
def tiny_bayes() -> Path:
    from xgir.app.demo_model import train_decoy_bayes

    folder = Path(tempfile.mkdtemp(prefix="xgir-app-model-"))
    return train_decoy_bayes(folder / "bayes.pt", n=200, epochs=1, width=4, hidden=16)


def make_state(folder: Path, n: int = N_IMAGES, eval_n: int = 100):
    from xgir.app import build_state

    return build_state(str(tiny_bayes()), "decoy-digits:train", folder / "feedback.db", folder / "out",
                       n=n, eval_n=eval_n, samples=4)
