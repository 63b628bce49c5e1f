"""Bayes-by-backprop training of the mean-field Bayesian layers of :mod:`xgir.models.bayes`."""

from __future__ import annotations

import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.bayes import kl_divergence, set_sampling
from xgir.train.erm import ExtraLoss, fit_classifier


def elbo_term(num_train: int, kl_weight: float = 1.0) -> ExtraLoss:
    """``extra_loss`` for :func:`xgir.train.fit_classifier`: kl_weight * KL / num_train (the KL
    divided by the number of minibatches, per image, added to the mean NLL)."""
    if num_train <= 0:
        raise XgirError(f"num_train must be positive, got {num_train}")

    def extra(
        model: nn.Module, _batch: dict[str, torch.Tensor], _logits: torch.Tensor
    ) -> torch.Tensor:
        return kl_weight * kl_divergence(model) / num_train

    return extra


def fit_bayes(
    model: nn.Module,
    dataset: ImageDataset,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    kl_weight: float = 1.0,
    progress: bool = True,
) -> nn.Module:
    """Bayes-by-backprop: Adam on mean NLL + KL / N with one Monte Carlo sample per step."""
    set_sampling(model, True)
    return fit_classifier(
        model,
        dataset,
        epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        extra_loss=elbo_term(len(dataset), kl_weight),
        progress=progress,
        desc="bayes",
    )
