"""Batched inference: the one place where xgir runs a model over a tensor of images."""

from __future__ import annotations

import torch
from torch import nn

from xgir.errors import XgirError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits float[N,K] (CPU) of images float[N,C,H,W], in batches on the model's device.

    The model runs in eval mode for the call (each submodule's mode is restored afterwards).
    XgirError for a non-image tensor, a batch size below 1, or a model that cannot run on
    images of this shape.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.Dropout(0.5))
    >>> x = torch.rand(5, 1, 8, 8)
    >>> torch.allclose(predict(net, x, batch_size=2), predict(net, x), atol=1e-6)  # dropout off
    True
    >>> net.training  # the caller's mode is kept
    True
    """
    from xgir.models.modes import eval_mode

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise XgirError(f"images must be [N,C,H,W], got {getattr(images, 'shape', type(images))}")
    if batch_size < 1:
        raise XgirError(f"batch_size must be at least 1, got {batch_size}")
    device = model_device(model)
    with eval_mode(model):
        try:
            outs = [model(images[i : i + batch_size].to(device)).float().cpu()
                    for i in range(0, len(images), batch_size)]
        except RuntimeError as err:
            raise XgirError(f"the model cannot run on images of shape {tuple(images.shape[1:])}: "
                            f"{str(err).splitlines()[0]}") from None
    return torch.cat(outs) if outs else torch.empty(0, 0)
