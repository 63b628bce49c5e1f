"""Shared by the app tests: one tiny Bayesian LeNet on decoy-digits (trained once per session)
and an app state on 100 training images with its own feedback store."""

from __future__ import annotations

import contextlib
import functools
import tempfile
import warnings
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


BASE = "http://127.0.0.1:8000"


@contextlib.contextmanager
def client_of(state, **kwargs):
    """Starlette's test client on the app serving ``state`` (``kwargs`` go to ``create_app``)."""
    with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx is what it runs on here
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from xgir.app.server import create_app

    with TestClient(create_app(state, **kwargs), base_url=BASE) as c:
        yield c


def one_line_error(resp, status: int) -> str:
    """The one-line error of a refused request (status as expected, no traceback)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in resp.text
    return body["error"]
