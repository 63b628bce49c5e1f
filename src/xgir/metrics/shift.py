"""Domain-shift metrics: accuracy per split and per group, worst-group accuracy, gap closed.

These are the canonical evaluation helpers (``xgir.train`` has quick ones for
training loops). Models are run in eval mode without gradients, in batches on
the model's device; results come back on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.inference import predict

__all__ = ["predict"]  # re-exported: xgir.models.inference is its home


def _label(dataset: ImageDataset) -> str:
    return f"dataset '{dataset.name}'" if dataset.name else "the dataset"


def correct(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> torch.Tensor:
    """bool[N]: whether the top-1 prediction equals the label."""
    if len(dataset) == 0:
        raise XgirError(f"{_label(dataset)} is empty: cannot measure accuracy")
    return predict(model, dataset.images, batch_size).argmax(1) == dataset.labels


def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``, in [0, 1]."""
    return float(correct(model, dataset, batch_size).float().mean())


def group_accuracy(
    hits: torch.Tensor, groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group accuracy from hits bool[N] and groups long[N] (tensor-only).

    Returns (group ids long[G], accuracy float[G], count long[G]) for the G groups that
    have at least one sample, in increasing id order.
    """
    if hits.shape != groups.shape or hits.ndim != 1:
        raise XgirError(
            f"hits and groups must both be [N]: {tuple(hits.shape)} vs {tuple(groups.shape)}"
        )
    if groups.numel() and int(groups.min()) < 0:
        raise XgirError("group ids must be >= 0")
    ids, inverse = torch.unique(groups, return_inverse=True)
    count = torch.bincount(inverse, minlength=len(ids))
    right = torch.bincount(inverse, weights=hits.double(), minlength=len(ids))
    return ids, (right / count).float(), count


def accuracy_by_group(
    model: nn.Module, dataset: ImageDataset, batch_size: int = 512
) -> dict[str, float]:
    """Accuracy of each group present in ``dataset`` (name -> accuracy), by increasing id."""
    if dataset.groups is None:
        raise XgirError(f"{_label(dataset)} has no groups: use accuracy() instead")
    ids, acc, _ = group_accuracy(correct(model, dataset, batch_size), dataset.groups)
    names = dataset.group_names
    return {
        (names[g] if g < len(names) else str(g)): float(a)
        for g, a in zip(ids.tolist(), acc.tolist(), strict=True)
    }


def worst_group_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """The lowest accuracy over the groups with at least one sample."""
    return min(accuracy_by_group(model, dataset, batch_size).values())


def evaluate_splits(
    model: nn.Module, splits: Mapping[str, ImageDataset], batch_size: int = 512
) -> dict[str, dict[str, float | int]]:
    """Per split: ``accuracy``, ``n`` and, when the split has groups, ``worst_group`` and
    ``num_groups`` (groups present)."""
    out: dict[str, dict[str, float | int]] = {}
    for name, ds in splits.items():
        hits = correct(model, ds, batch_size)
        row: dict[str, float | int] = {"accuracy": float(hits.float().mean()), "n": len(ds)}
        if ds.groups is not None:
            _, acc, _ = group_accuracy(hits, ds.groups)
            row["worst_group"] = float(acc.min())
            row["num_groups"] = len(acc)
        out[name] = row
    return out


def accuracy_per_split(
    model: nn.Module, splits: Mapping[str, ImageDataset], batch_size: int = 512
) -> dict[str, float]:
    """Split name -> accuracy."""
    return {
        name: float(row["accuracy"])
        for name, row in evaluate_splits(model, splits, batch_size).items()
    }


def gap_closed(
    baseline_acc: float | torch.Tensor,
    method_acc: float | torch.Tensor,
    reference_acc: float | torch.Tensor,
    eps: float = 1e-12,
) -> float | torch.Tensor:
    """Share of the gap between a baseline and a reference closed by a method:
    (method - baseline) / (reference - baseline).

    1 = the method reaches the reference, 0 = no better than the baseline, < 0 = worse,
    > 1 = beyond the reference. When |reference - baseline| <= eps there is no gap to close and
    the result is NaN. Works elementwise on tensors (e.g. one value per seed).
    """
    if any(isinstance(v, torch.Tensor) for v in (baseline_acc, method_acc, reference_acc)):
        b, m, r = (
            torch.as_tensor(v, dtype=torch.float64)
            for v in (baseline_acc, method_acc, reference_acc)
        )
        gap = r - b
        return torch.where(
            gap.abs() > eps, (m - b) / torch.where(gap.abs() > eps, gap, 1.0), float("nan")
        )
    gap_f = float(reference_acc) - float(baseline_acc)
    if abs(gap_f) <= eps:
        return math.nan
    return (float(method_acc) - float(baseline_acc)) / gap_f
