"""What the running app holds: the model, the image set, predictions, a small cache, the paths.

The model is shared by request threads, so every computation on it runs under ``model_lock``
(explainers attach hooks); a correction trains a copy. The feedback store is opened per
request (one SQLite connection each), so concurrent saves are serialised by SQLite itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.app.images import ImageSet
from xgir.correct.feedback import FeedbackStore
from xgir.errors import XgirError
from xgir.models import LoadedModel
from xgir.models.bayes import bayes_layers, predictive, sampling
from xgir.models.modes import eval_mode


@dataclass
class Predictions:
    """probs float[N,K]; pred long[N]; confidence float[N]; uncertainty float[N] (mutual
    information for a Bayesian model, else predictive entropy, nats)."""

    probs: torch.Tensor
    pred: torch.Tensor
    confidence: torch.Tensor
    uncertainty: torch.Tensor
    uncertainty_name: str


def is_bayesian(model: nn.Module) -> bool:
    return bool(bayes_layers(model))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, samples: int = 10, batch_size: int = 64) -> Predictions:
    """Predictions of ``model`` on images float[N,C,H,W]; a Bayesian model is sampled ``samples`` times."""
    if is_bayesian(model):
        out = predictive(model, images, samples, batch_size=batch_size)
        probs, unc, name = out["probs"], out["mutual_information"], "mutual information"
    else:
        from xgir.train import predict_logits

        probs = torch.softmax(predict_logits(model, images, batch_size), 1)
        unc = -(probs * probs.clamp(min=1e-12).log()).sum(1)
        name = "entropy"
    conf, pred = probs.max(1)
    return Predictions(probs, pred, conf, unc, name)


@contextlib.contextmanager
def mean_network(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (each submodule's mode restored after) and, for a Bayesian model, its mean
    network (explanations are of the mean)."""
    with eval_mode(model), sampling(model, False) if is_bayesian(model) else contextlib.nullcontext():
        yield model


class Cache:
    """A small thread-safe LRU cache: ``get(key, compute)``."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


def default_layers(loaded: LoadedModel, x: torch.Tensor) -> tuple[str, str]:
    """(deep, shallow) explanation layers: the model's own, else the last spatial child and
    the finer one before it (``pool2`` / ``relu2`` for the (Bayesian) LeNet)."""
    from xgir.explain._hooks import default_layers as probe

    if loaded.layer and loaded.shallow_layer:
        return loaded.layer, loaded.shallow_layer
    deep, shallow = probe(loaded.model, x)
    return loaded.layer or deep, loaded.shallow_layer or shallow


TREE_SOURCES = ("auto", "head", "images")


class AppState:
    """The app's state; ``feedback`` is the SQLite file, ``out`` the folder for corrected models;
    ``tree_source``: where CWOX's confusion tree comes from (:func:`xgir.app.analysis.tree_source`)."""

    def __init__(self, loaded: LoadedModel, images: ImageSet, feedback: str | Path, out: str | Path,
                 eval_images: ImageSet | None = None, samples: int = 10, annotator: str = "user",
                 tree_source: str = "auto") -> None:
        if len(images) == 0:
            raise XgirError("the image set is empty")
        if tree_source not in TREE_SOURCES:
            raise XgirError(f"--tree must be one of {', '.join(TREE_SOURCES)}, got '{tree_source}'")
        self.tree_source = tree_source
        self.loaded, self.images, self.eval_images = loaded, images, eval_images
        self.feedback_path, self.out = Path(feedback), Path(out)
        self.samples, self.annotator = samples, annotator
        self.model_lock = threading.RLock()
        self.cache = Cache()
        with FeedbackStore(self.feedback_path, len(images), images.height, images.width):
            pass  # create it, or check that an existing store fits these images
        if not os.access(self.feedback_path, os.W_OK) or not os.access(self.feedback_path.parent, os.W_OK):
            from xgir.errors import warn

            warn(f"feedback store {self.feedback_path} is read-only: browsing works, saving feedback will be "
                 "refused (nothing stored is lost)")
        with self.model_lock:
            self.preds = predict(loaded.model, images.images, samples)
            self.deep_layer, self.shallow_layer = default_layers(loaded, images.images[:1])
        self.bayesian = is_bayesian(loaded.model)
        self.classes = list(loaded.classes) or [str(i) for i in range(self.preds.probs.shape[1])]
        from xgir.app.jobs import JobManager
        from xgir.app.progress import Runs

        self.jobs = JobManager()
        self.runs = Runs()

    def store(self) -> FeedbackStore:
        """A fresh connection to the feedback store (close it: use ``with``)."""
        return FeedbackStore(self.feedback_path)

    def check_id(self, image_id: int) -> int:
        if not 0 <= image_id < len(self.images):
            raise LookupError(f"unknown image id {image_id}; ids are 0..{len(self.images) - 1}")
        return image_id

    def label(self, image_id: int) -> int | None:
        y = int(self.images.labels[image_id])
        return None if y < 0 else y

    def class_name(self, c: int | None) -> str:
        if c is None:
            return "?"
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)
