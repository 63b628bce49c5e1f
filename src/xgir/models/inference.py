"""Batched inference: the one place where xgir runs a model over a tensor of images."""

from __future__ import annotations

import re

import torch
from torch import nn

from xgir.errors import XgirError

DEVICES = "cpu, cuda, cuda:N or mps"


def resolve_device(name: str, option: str = "--device", allow_auto: bool = False) -> torch.device:
    """``name`` as a torch device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (and, with
    ``allow_auto``, ``auto``: cuda when there is one, else cpu). One XgirError line naming
    ``option`` for an unknown name or a device this machine does not have.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if allow_auto and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", name):
        hint = " (for a GPU use cuda)" if name.lower() in ("gpu", "nvidia") else ""
        raise XgirError(f"unknown {option} '{name}'{hint}; use {DEVICES}" + (" or auto" if allow_auto else ""))
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise XgirError(f"{option} {name} asked for, but no CUDA device is available; use cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise XgirError(f"{option} mps asked for, but MPS is not available; use cpu")
    return torch.device(name)


def check_images(images: object, model: nn.Module | None = None, what: str = "images",
                 finite: bool = False) -> torch.Tensor:
    """``images`` if they are a floating tensor [N,C,H,W] of the dtype of ``model``'s weights (and,
    with ``finite``, free of NaN and infinity); one XgirError line saying what to change otherwise.

    >>> check_images(torch.zeros(2, 3, 8, 8, dtype=torch.float64), nn.Linear(2, 2))
    Traceback (most recent call last):
    xgir.errors.XgirError: images are float64 but the model's weights are float32; convert them with images.float()
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise XgirError(f"{what} must be a tensor [N,C,H,W], got {tuple(getattr(images, 'shape', ())) or type(images)}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None) if model is not None else None
    if not images.is_floating_point() or (dtype is not None and images.dtype != dtype):
        want = str(dtype or torch.float32).removeprefix("torch.")
        how = "images.float()" if want == "float32" else f"images.to(torch.{want})"
        raise XgirError(f"{what} are {str(images.dtype).removeprefix('torch.')} but the model's weights are {want}; "
                        f"convert them with {how}" + (" (values in [0, 1])" if not images.is_floating_point() else ""))
    if finite:
        bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise XgirError(f"{int(bad.sum())} of the {what} hold NaN or infinite values (the first: image "
                            f"{int(bad.nonzero()[0])}); fix or drop them")
    return images


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

    check_images(images, model)
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
