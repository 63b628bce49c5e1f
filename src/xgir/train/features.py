"""Frozen features and linear heads: extract once (cached on disk), train heads fast.

Features of many images (a user's folder, ``xgir features``): :func:`features_pass` runs the
extraction as a pass of :mod:`xgir.sharded` - sharded over torchrun's processes, written in
resumable chunks; :func:`cached_features` uses it too when a process group is active.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.io import cache_dir, cached, files_fingerprint, fingerprint, torch_save
from xgir.models.split import get_module
from xgir.progress import iterate
from xgir.sharded import Dist, GuardedImages, PassPlan, active_dist, collate_readable, load_pass, sharded_pass
from xgir.train.erm import check_features, check_loss, check_weights, model_device


@torch.no_grad()
def extract_features(
    features: nn.Module, images: torch.Tensor, batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """``features(x)`` for all images float[N,C,H,W] -> float[N,D] on the CPU (module in eval)."""
    device = model_device(features)
    was_training = features.training
    features.eval()
    out = []
    for i in iterate(range(0, len(images), batch_size), desc="features", enabled=progress, unit="batch"):
        out.append(features(images[i : i + batch_size].to(device)).float().cpu())
    features.train(was_training)
    return torch.cat(out)


class _Stop(Exception):
    """Raised by :class:`PooledLayer`'s hook: the rest of the network is not needed."""


class PooledLayer(nn.Module):
    """The output of ``model``'s layer ``layer``, global-average pooled: float[N,C] (a
    [N,C,H,W] map averaged over H, W; a [N,D] output flattened as is). The forward stops at
    that layer (the layers after it do not run)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self._module = get_module(model, layer)  # unknown names: one line listing the layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        got: list[torch.Tensor] = []

        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            got.append(out[0] if isinstance(out, (tuple, list)) else out)
            raise _Stop

        handle = self._module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not got or not torch.is_tensor(got[0]):
            raise XgirError(f"layer '{self.layer}' gave no tensor in the forward pass; name another layer")
        out = got[0]
        return out.flatten(2).mean(2) if out.ndim > 2 else out.flatten(1)


def images_fingerprint(dataset: Any, indices: torch.Tensor) -> str:
    """What features of ``dataset[indices]`` depend on besides the model: the pixels and labels
    of images in memory (an :class:`ImageDataset`), or the labels and each file's name, size and
    modification time for images read lazily (no file is read)."""
    files = [str(dataset.files[int(i)]) for i in indices] if dataset.files else []
    labels = dataset.labels[indices]
    if isinstance(dataset, ImageDataset):
        return fingerprint(dataset.images[indices], labels, files)
    return fingerprint(labels, files_fingerprint(files))


def features_pass(dist: Dist, features: nn.Module, dataset: Any, run_dir: Path, key: dict[str, Any], *,
                  indices: torch.Tensor | None = None, batch_size: int = 64, chunk_images: int = 2048,
                  dtype: torch.dtype = torch.float32, workers: int = 0, resume: bool = True,
                  progress: bool = False) -> PassPlan:
    """``features(x)`` of ``dataset[indices]`` (items ``{"image", "label"}``; all items by
    default) as a pass of :mod:`xgir.sharded`: this rank's chunks, written under ``run_dir``
    (resumable; ``key`` names what the features depend on). When it returns every rank is
    done and :func:`~xgir.sharded.load_pass` of the plan gives ``h`` dtype[N,D] (stored as
    ``dtype``, e.g. float16: 2 D bytes per image) and ``label`` int32[N] in dataset order.
    An unreadable image stops the pass with one line naming it."""
    indices = torch.arange(len(dataset)) if indices is None else indices

    @torch.no_grad()
    def fn(batch: dict[str, Any], pos: torch.Tensor) -> dict[str, Any]:
        if batch["bad"]:
            raise XgirError(batch["bad"][0][1])
        h = features(batch["image"].to(dist.device)).float()
        return {"h": h.to(dtype).cpu(), "label": batch["label"].int()}

    was_training = features.training
    features.eval()
    try:
        return sharded_pass(dist, run_dir, "features", {"dtype": str(dtype), **key}, GuardedImages(dataset),
                            indices, fn, batch_size=batch_size, chunk_images=chunk_images, workers=workers,
                            resume=resume, progress=progress, collate_fn=collate_readable)
    finally:
        features.train(was_training)


def cached_features(
    features: nn.Module, dataset: ImageDataset, key: str, batch_size: int = 512, progress: bool = False,
    chunk_images: int = 4096,
) -> torch.Tensor:
    """:func:`extract_features` cached on disk under the model's fingerprint and ``key``
    (a description of the dataset: name, split, seed, params).

    When a process group with more than one rank is active (under ``torchrun``, after
    :func:`xgir.sharded.init_dist`), call it on every rank: the ranks share the extraction
    (:func:`features_pass`, chunks under the cache folder, the features kept in float32, so
    the result equals one process's: ``chunk_images`` is rounded to whole batches), rank 0
    writes the cache entry and every rank gets the features float[N,D]."""
    fp = fingerprint(features, key, len(dataset))
    dist = active_dist(model_device(features))
    if dist is None:
        return cached("features", fp, lambda: extract_features(features, dataset.images, batch_size, progress))
    return cached_pass_features(dist, features, dataset, fp, batch_size=batch_size,
                                chunk_images=-(-chunk_images // batch_size) * batch_size, progress=progress)


def cached_pass_features(dist: Dist, features: nn.Module, dataset: Any, fp: str, *,
                         indices: torch.Tensor | None = None, batch_size: int = 64, chunk_images: int = 2048,
                         workers: int = 0, progress: bool = False) -> torch.Tensor:
    """``features(x)`` of ``dataset[indices]`` (items ``{"image", "label"}``: an
    :class:`ImageDataset` or images read lazily) float32[N,D], cached on disk as
    ``cache_dir()/features/<fp>.pt``: ``fp`` names what they depend on (e.g. the model's
    fingerprint and :func:`images_fingerprint`). Computed by :func:`features_pass`, shared by
    the ranks of ``dist`` (call on every rank) in resumable chunks under ``<fp>.passes``;
    rank 0 writes the entry and every rank reads it."""
    path = cache_dir() / "features" / f"{fp}.pt"
    if not all(dist.exchange(path.exists())):  # the same answer on every rank
        run_dir = cache_dir() / "features" / f"{fp}.passes"
        plan = features_pass(dist, features, dataset, run_dir, {"cache": fp}, indices=indices,
                             batch_size=batch_size, chunk_images=chunk_images, workers=workers, progress=progress)
        if dist.is_main:
            torch_save(load_pass(plan)["h"], path)
            shutil.rmtree(run_dir, ignore_errors=True)
        dist.barrier()
    return torch.load(path, weights_only=True)


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    head: nn.Linear | None = None,
) -> nn.Linear:
    """Train a softmax head (``nn.Linear(D, K)``) on fixed features float[N,D] with Adam.

    A fresh, seeded head unless ``head`` is given (then it is trained further in place).
    """
    check_features(features)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if head is None:
        head = nn.Linear(features.shape[1], num_classes)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(features)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            check_loss(loss, "head", epoch, i // batch_size, lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    check_weights(list(head.parameters()), "head", lr)
    return head.eval()


def linear_probe(
    fit_x: torch.Tensor, fit_y: torch.Tensor, score_x: torch.Tensor, score_y: torch.Tensor, c: float = 1.0
) -> float:
    """Accuracy of an L2 logistic regression fitted on standardised ``fit_x`` and scored on
    ``score_x`` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    clf.fit(fit_x.numpy(), fit_y.numpy())
    return float(clf.score(score_x.numpy(), score_y.numpy()))
