"""Perturbation CAMs: Score-CAM and Ablation-CAM, batched over images, channels and targets.

Both weight the channels of a layer's activations A float[N,K,u,v] by how the target scores
y[n,t] (logit, cluster generalised logit or weighted logits, :mod:`xgir.explain.targets`)
respond when the model is perturbed, and return M[n,t] = sum_k w[n,t,k] A[n,k], then ReLU
(optional) and bilinear upsampling to the input size (``align_corners=False``):

- Score-CAM (Wang et al., CVPR-W 2020): each channel, upsampled bilinearly to the input size
  and min-max scaled to [0, 1] (``S_k = (U_k - min U_k) / (max U_k - min U_k + 1e-8)``),
  masks the image; ``w[n,t,:] = softmax_k y_t(x_n * S_k)``;
- Ablation-CAM (Desai & Ramaswamy, WACV 2020): channel k of the layer's output is set to 0
  and the rest of the network run on; ``w[n,t,k] = (y[n,t] - y_k[n,t]) / y[n,t]`` (0 for a
  target whose score y[n,t] is exactly 0, where the ratio is undefined).

Batching: the N*K perturbed forward passes are run in chunks of at most ``batch_size``
(image, channel) pairs (the masks of a chunk are built only for that chunk), and all T targets
of an image share them (T targets cost no more forward passes than one). Ablation-CAM replaces
the layer's output by the ablated activations with a forward hook, so the network after the
layer sees them (the part before the layer still runs on each chunk's images, as in
pytorch-grad-cam).

The model's mode is not changed (call ``model.eval()`` first); no gradients are taken.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.explain._blackbox import check_positive, images_for
from xgir.explain._hooks import LayerCapture, default_layer, resolve_layer
from xgir.explain.gradcam import finish_maps, forward_logits, read_targets
from xgir.explain.targets import Targets
from xgir.progress import Progress

SCORE_EPS = 1e-8  # pytorch-grad-cam's constant in the mask min-max scaling


def _layer_forward(model: nn.Module, x: torch.Tensor, module: nn.Module, name: str, targets: Any
                   ) -> tuple[torch.Tensor, Targets, torch.Tensor]:
    """One clean forward pass: (activation float[N,K,u,v], targets, scores float[N,T])."""
    with LayerCapture(module) as cap:
        logits = forward_logits(model, x)
        act = cap.get(module)
    if act.ndim != 4:
        raise XgirError(f"{name} needs a layer with output [N,K,u,v]; gives shape {tuple(act.shape)}")
    tg = read_targets(targets, logits)
    return act, tg, tg.scores(logits.float())


def _pairs(n: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All (image, channel) pairs, image-major: long[N*K] each."""
    img = torch.arange(n, device=device).repeat_interleave(k)
    return img, torch.arange(k, device=device).repeat(n)


def _chunk_scores(tg: Targets, logits: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Scores float[B,T] of B perturbed forward passes, each with its own image's targets."""
    chunk_targets = Targets(tg.weights[img], tg.cluster[img], tg.is_cluster[img])
    return chunk_targets.scores(logits.float())


def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layer: str | nn.Module,
    *,
    relu: bool = True,
    upsample: bool = True,
    batch_size: int = 64,
    align_corners: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Score-CAM maps float[N,T,H,W] (module docstring) at ``layer``.

    Args:
        batch_size: masked images per forward pass (bounds memory: the masks of a chunk only).
        align_corners: how the channels are upsampled into masks; True as pytorch-grad-cam
            (``nn.UpsamplingBilinear2d``), False as the Score-CAM authors' code.
        progress: show a progress bar over the chunks.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3)).eval()
    >>> score_cam(net, torch.rand(4, 1, 8, 8), [0, 2], "1").shape
    torch.Size([4, 2, 8, 8])
    """
    check_positive(batch_size=batch_size)
    x = images_for(model, x)
    module = resolve_layer(model, layer)
    n, c, h, w = x.shape
    with torch.no_grad():
        act, tg, _ = _layer_forward(model, x, module, "Score-CAM", targets)
        k = act.shape[1]
        img, chan = _pairs(n, k, x.device)
        scores = torch.empty(n * k, tg.shape[1], device=x.device)
        bar = Progress(total=math.ceil(n * k / batch_size), desc="Score-CAM", enabled=progress)
        for start in range(0, n * k, batch_size):
            i, j = img[start:start + batch_size], chan[start:start + batch_size]
            maps = act[i, j][:, None].float()  # [B,1,u,v]
            up = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=align_corners)[:, 0]
            lo = up.flatten(1).amin(1)[:, None, None]
            hi = up.flatten(1).amax(1)[:, None, None]
            masks = (up - lo) / (hi - lo + SCORE_EPS)
            logits = forward_logits(model, x[i] * masks[:, None].to(x.dtype))
            scores[start:start + batch_size] = _chunk_scores(tg, logits, i)
            bar.update()
        bar.close()
        weights = torch.softmax(scores.reshape(n, k, -1).transpose(1, 2), dim=-1)  # [N,T,K]
        cams = torch.einsum("ntk,nkuv->ntuv", weights, act.float())
    return finish_maps(cams, relu=relu, size=(h, w) if upsample else None)


def ablation_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layer: str | nn.Module,
    *,
    relu: bool = True,
    upsample: bool = True,
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """Ablation-CAM maps float[N,T,H,W] (module docstring) at ``layer``.

    Args:
        batch_size: ablated forward passes per batch ((image, channel) pairs of any images).
        progress: show a progress bar over the chunks.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3)).eval()
    >>> ablation_cam(net, torch.rand(4, 1, 8, 8), [0, 2], "1").shape
    torch.Size([4, 2, 8, 8])
    """
    check_positive(batch_size=batch_size)
    x = images_for(model, x)
    module = resolve_layer(model, layer)
    n, _, h, w = x.shape
    with torch.no_grad():
        act, tg, base = _layer_forward(model, x, module, "Ablation-CAM", targets)
        k = act.shape[1]
        img, chan = _pairs(n, k, x.device)
        ablated = torch.empty(n * k, tg.shape[1], device=x.device)
        replacement: list[torch.Tensor] = []

        def replace(_m: nn.Module, _a: object, out: object) -> torch.Tensor:
            return replacement[0]

        handle = module.register_forward_hook(replace)
        bar = Progress(total=math.ceil(n * k / batch_size), desc="Ablation-CAM", enabled=progress)
        try:
            for start in range(0, n * k, batch_size):
                i, j = img[start:start + batch_size], chan[start:start + batch_size]
                out = act[i].clone()
                out[torch.arange(len(i), device=x.device), j] = 0
                replacement[:] = [out]
                logits = forward_logits(model, x[i])
                ablated[start:start + batch_size] = _chunk_scores(tg, logits, i)
                bar.update()
        finally:
            handle.remove()
            bar.close()
        drop = base[:, :, None] - ablated.reshape(n, k, -1).transpose(1, 2)  # [N,T,K]
        nonzero = base[:, :, None] != 0
        weights = torch.where(nonzero, drop / torch.where(nonzero, base[:, :, None], 1.0), 0.0)
        cams = torch.einsum("ntk,nkuv->ntuv", weights, act.float())
    return finish_maps(cams, relu=relu, size=(h, w) if upsample else None)


class _PerturbationCAM:
    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 batch_size: int = 64, progress: bool = False) -> None:
        check_positive(batch_size=batch_size)
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.batch_size = batch_size
        self.progress = progress

    def _layer(self, model: nn.Module, x: torch.Tensor) -> str:
        return self.layer if self.layer is not None else default_layer(model, images_for(model, x))


class ScoreCAM(_PerturbationCAM):
    """Score-CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        layer: module path; None picks the model's last top-level child with a spatial output.
        relu, upsample: as Grad-CAM.
        batch_size: masked images per forward pass (N*K of them in all, shared by the targets).
        align_corners: mask upsampling (True as pytorch-grad-cam, False as the authors' code).
        progress: show a progress bar.
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 batch_size: int = 64, align_corners: bool = True, progress: bool = False) -> None:
        super().__init__(layer=layer, relu=relu, upsample=upsample, batch_size=batch_size, progress=progress)
        self.align_corners = align_corners

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        return score_cam(model, x, targets, self._layer(model, x), relu=self.relu, upsample=self.upsample,
                         batch_size=self.batch_size, align_corners=self.align_corners, progress=self.progress)


class AblationCAM(_PerturbationCAM):
    """Ablation-CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        layer: module path; None picks the model's last top-level child with a spatial output.
        relu, upsample: as Grad-CAM.
        batch_size: ablated forward passes per batch (N*K of them in all, shared by the targets).
        progress: show a progress bar.
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 batch_size: int = 32, progress: bool = False) -> None:
        super().__init__(layer=layer, relu=relu, upsample=upsample, batch_size=batch_size, progress=progress)

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        return ablation_cam(model, x, targets, self._layer(model, x), relu=self.relu, upsample=self.upsample,
                            batch_size=self.batch_size, progress=self.progress)
