"""Domain-shift metrics: accuracy per split and per group, worst-group accuracy, gap closed.

Accuracy itself lives once in :mod:`xgir.models.accuracy` (re-exported here and in
``xgir.train``): :func:`accuracy`, :func:`accuracy_by_group` (the one result shape: accuracy,
n and, with groups, per-group, worst-group and number of groups), :func:`group_accuracy` and
:func:`accuracy_from_predictions` for tensors. Models are run in eval mode without gradients,
in batches on the model's device; results come back on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.accuracy import (
    Accuracy,
    accuracy,
    accuracy_by_group,
    accuracy_from_predictions,
    correct,
    group_accuracy,
)
from xgir.models.inference import predict

# re-exported: xgir.models.inference and xgir.models.accuracy are their home
__all__ = ["accuracy", "accuracy_by_group", "accuracy_from_predictions", "correct", "group_accuracy", "predict"]


def worst_group_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """The lowest accuracy over the groups with at least one sample (XgirError without groups)."""
    if dataset.groups is None:
        name = f"dataset '{dataset.name}'" if dataset.name else "the dataset"
        raise XgirError(f"{name} has no groups: use accuracy() instead")
    return float(accuracy_by_group(model, dataset, batch_size)["worst_group"])


def evaluate_splits(
    model: nn.Module, splits: Mapping[str, ImageDataset], batch_size: int = 512
) -> dict[str, Accuracy]:
    """Split name -> :func:`accuracy_by_group` (``accuracy``, ``n`` and, when the split has
    groups, ``groups``, ``worst_group`` and ``num_groups``)."""
    return {name: accuracy_by_group(model, ds, batch_size) for name, ds in splits.items()}


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
