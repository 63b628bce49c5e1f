"""Accuracy, per-group and worst-group accuracy: the one implementation.

Tensor level (no model): :func:`group_accuracy` (hits, groups),
:func:`accuracy_from_predictions` (predictions, labels, groups) and
:func:`pseudo_group_worst_accuracy` (the annotation-free selection score). Model level (a model and an
:class:`~xgir.data.base.ImageDataset`, run through :func:`xgir.models.inference.predict`):
:func:`correct`, :func:`accuracy`, :func:`accuracy_by_group`. ``xgir.train`` and
``xgir.metrics`` re-export these; the benches, DFR and the app call them.

Every accuracy is a float in [0, 1] computed in float64 (hits / count). The one return shape,
:data:`Accuracy`, is a dict::

    {"accuracy": float, "n": int}                        # no groups
    {"accuracy": float, "n": int, "groups": {name: float}, "worst_group": float, "num_groups": int}

``groups`` lists the groups with at least one sample, by increasing id; ``worst_group`` is the
lowest of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.inference import predict

Accuracy = dict[str, Any]  # see the module docstring for its keys


def group_accuracy(
    hits: torch.Tensor, groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group accuracy from hits bool[N] and groups long[N] (ids >= 0).

    Returns (group ids long[G], accuracy float64[G], count long[G]) for the G groups that have
    at least one sample, in increasing id order.

    >>> group_accuracy(torch.tensor([True, False, True]), torch.tensor([5, 5, 1]))[1].tolist()
    [1.0, 0.5]
    """
    if hits.shape != groups.shape or hits.ndim != 1:
        raise XgirError(
            f"hits and groups must both be [N]: {tuple(hits.shape)} vs {tuple(groups.shape)}"
        )
    if groups.numel() and int(groups.min()) < 0:
        raise XgirError("group ids must be >= 0")
    ids, inverse = torch.unique(groups.cpu(), return_inverse=True)
    count = torch.bincount(inverse, minlength=len(ids))
    right = torch.bincount(inverse, weights=hits.cpu().double(), minlength=len(ids))
    return ids, right / count, count


def accuracy_from_predictions(
    pred: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | None = None,
    group_names: Sequence[str] = (),
) -> Accuracy:
    """Accuracy of predictions long[N] against labels long[N]; with groups long[N], also the
    per-group and worst-group accuracy (see :data:`Accuracy`). Group g is named
    ``group_names[g]`` when there is one, else ``str(g)``.

    >>> r = accuracy_from_predictions(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]),
    ...                               torch.tensor([0, 0, 1, 1]), ["a", "b"])
    >>> r["accuracy"], r["groups"], r["worst_group"]
    (0.75, {'a': 1.0, 'b': 0.5}, 0.5)
    """
    pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
    if pred.ndim != 1 or pred.shape != labels.shape:
        raise XgirError(f"predictions and labels must both be [N]: {tuple(pred.shape)} vs {tuple(labels.shape)}")
    if len(pred) == 0:
        raise XgirError("no samples: cannot measure accuracy")
    hits = pred.cpu() == labels.cpu()
    out: Accuracy = {"accuracy": float(hits.double().mean()), "n": len(hits)}
    if groups is not None:
        ids, acc, _ = group_accuracy(hits, torch.as_tensor(groups))
        out["groups"] = {(group_names[g] if g < len(group_names) else str(g)): float(a)
                         for g, a in zip(ids.tolist(), acc.tolist(), strict=True)}
        out["worst_group"] = float(acc.min())
        out["num_groups"] = len(ids)
    return out


def pseudo_group_worst_accuracy(pred: torch.Tensor, labels: torch.Tensor, erm_pred: torch.Tensor) -> float:
    """Worst accuracy of predictions long[N] over the pseudo-groups (class y, whether the ERM
    model's prediction ``erm_pred`` long[N] is right): an annotation-free stand-in for
    worst-group accuracy when selecting a model (the ERM's errors mark the minority groups,
    as in JTT and AFR). Pseudo-group id = 2 y + [erm_pred == y]; empty pseudo-groups are left
    out. A float in [0, 1].

    >>> pseudo_group_worst_accuracy(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]),
    ...                             torch.tensor([0, 1, 1, 1]))
    1.0
    >>> pseudo_group_worst_accuracy(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]),
    ...                             torch.tensor([0, 0, 1, 0]))
    0.0
    """
    pred, labels, erm_pred = torch.as_tensor(pred), torch.as_tensor(labels), torch.as_tensor(erm_pred)
    if erm_pred.shape != labels.shape:
        raise XgirError(f"ERM predictions and labels must both be [N]: {tuple(erm_pred.shape)} vs "
                        f"{tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise XgirError("labels must be >= 0")
    groups = 2 * labels.long().cpu() + (erm_pred.cpu() == labels.cpu()).long()
    return float(accuracy_from_predictions(pred, labels, groups)["worst_group"])


def _label(dataset: ImageDataset) -> str:
    return f"dataset '{dataset.name}'" if dataset.name else "the dataset"


def _predictions(model: nn.Module, dataset: ImageDataset, batch_size: int) -> torch.Tensor:
    if len(dataset) == 0:
        raise XgirError(f"{_label(dataset)} is empty: cannot measure accuracy")
    return predict(model, dataset.images, batch_size).argmax(1)


def correct(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> torch.Tensor:
    """bool[N]: whether the model's top-1 prediction equals the label."""
    return _predictions(model, dataset, batch_size) == dataset.labels


def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``, in [0, 1]."""
    return float(correct(model, dataset, batch_size).double().mean())


def accuracy_by_group(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> Accuracy:
    """Accuracy of ``model`` on ``dataset`` and, when it has groups, per-group and worst-group
    accuracy (:data:`Accuracy`)."""
    return accuracy_from_predictions(_predictions(model, dataset, batch_size), dataset.labels,
                                     dataset.groups, dataset.group_names)
