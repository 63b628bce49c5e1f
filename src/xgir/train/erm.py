"""Empirical risk minimisation: Adam on cross-entropy, with progress bar and seeds."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.accuracy import accuracy, accuracy_by_group
from xgir.models.bcos import bce_loss, is_bcos
from xgir.models.inference import check_images, model_device, predict
from xgir.progress import Progress

ExtraLoss = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]

__all__ = ["accuracy", "accuracy_by_group", "check_features", "check_loss", "check_weights", "fit_classifier",
           "predict_logits"]
# accuracy and accuracy_by_group are re-exported from their home, xgir.models.accuracy


def _bcos_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return bce_loss(logits, batch["label"])


def check_loss(loss: torch.Tensor, desc: str, epoch: int, step: int, lr: float) -> float:
    """``float(loss)``; XgirError when it is NaN or infinite (the run diverged)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise XgirError(f"{desc}: training diverged (loss {value} at epoch {epoch + 1}, step {step + 1}); "
                        f"lower the learning rate (lr {lr:g}); nothing was saved")
    return value


def check_features(features: torch.Tensor) -> None:
    """XgirError when features hold NaN or infinity: what training then reports would be a
    divergence, while the cause is the images (or the extractor)."""
    if not bool(torch.isfinite(features).all()):
        raise XgirError("the features hold NaN or infinite values (images holding NaN, or a broken extractor); "
                        "a head cannot be trained on them")


def check_weights(params: list[nn.Parameter], desc: str, lr: float) -> None:
    """XgirError when a trained parameter holds NaN or infinity (the last step diverged)."""
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise XgirError(f"{desc}: training diverged (weights became NaN or infinite); lower the learning rate "
                        f"(lr {lr:g}); nothing was saved")


def fit_classifier(
    model: nn.Module,
    dataset: ImageDataset,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    weight_decay: float = 0.0,
    progress: bool = True,
    extra_loss: ExtraLoss | None = None,
    parameters: list[nn.Parameter] | None = None,
    desc: str = "train",
    loss_fn: LossFn | None = None,
) -> nn.Module:
    """Train ``model`` in place with Adam on cross-entropy over ``dataset``; returns it in eval mode.

    Args:
        extra_loss: optional ``(model, batch, logits) -> scalar`` added to the loss (guidance).
        parameters: parameters to optimise (default: all that require grad).
        loss_fn: ``(logits, batch) -> scalar`` replacing cross-entropy on ``batch["label"]``; a
            B-cos model (:func:`xgir.models.bcos.is_bcos`) trains by default with B-cos v2's
            binary cross-entropy (:func:`xgir.models.bcos.bce_loss`).
    """
    check_images(dataset.images, model, "training images", finite=True)  # not "diverged" for bad data
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise XgirError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if loss_fn is None and is_bcos(model):
        loss_fn = _bcos_loss
    device = model_device(model)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(dataset) // batch_size)
    bar = Progress(total=steps, desc=desc, enabled=progress)
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for step, batch in enumerate(dataset.batches(batch_size, shuffle=True, generator=g)):
            x = batch["image"].to(device)
            y = batch["label"].to(device)
            logits = model(x)
            if loss_fn is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = loss_fn(logits, {k: v.to(device) for k, v in batch.items()})
            if extra_loss is not None:
                loss = loss + extra_loss(model, {k: v.to(device) for k, v in batch.items()}, logits)
            value = check_loss(loss, desc, epoch, step, lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += value * len(y)
            count += len(y)
            bar.update(1, epoch=f"{epoch + 1}/{epochs}", loss=f"{total / count:.3f}")
        bar.epoch_end()
    check_weights(params, desc, lr)
    bar.close()
    return model.eval()


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits float[N,K] of ``images`` float[N,C,H,W]: :func:`xgir.models.inference.predict`."""
    return predict(model, images, batch_size)
