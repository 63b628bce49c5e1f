"""B-cos explanations: contribution maps W(x)ᵀx ⊙ x and their colour version.

In explanation mode (:func:`xgir.models.bcos.explanation_mode`) a B-cos network is linear in
its input, f(x) = W(x) x + b, with W(x) = d f / d x taken with the dynamic scales detached. For a
target score s (a logit, or any :mod:`xgir.explain.targets` score):

    contribution[n,t,h,w] = sum_c a[n,c,h,w] * d s[n,t] / d a[n,c,h,w]

where a is the model's input as its first layer sees it (the 2C-channel encoding [x, 1 - x]
when the model has an :class:`~xgir.models.bcos.AddInverse`, else x), or the output of a named
layer (``layer=``), upsampled bilinearly to the image. At the input the map sums to s minus the
logit bias (the logit's share of it); at a layer it sums to the same (the tail of a B-cos
network is linear in that layer's output in explanation mode).

On a network without B-cos layers there is nothing to detach and the map is input x gradient
at that input or layer (for a bias-free X-DNN it equals Integrated Gradients from zero, see
:mod:`xgir.models.zoo`). ``create_graph=True`` keeps the graph: the maps are then
differentiable in the model's parameters (the guidance losses of :mod:`xgir.correct.guidance`).

Reference: Böhle, Fritz, Schiele, "B-cos Networks: Alignment is All We Need for
Interpretability", CVPR 2022, and B-cos v2 (TPAMI 2024), whose ``explain`` returns the same map
for one image and one class. What differs: batched over images and targets, readable at any
layer; Model-Guidance (Rao et al. 2023) takes these maps during training with the forward pass
outside explanation mode (their ``explanation_mode`` context wraps only the gradient call), so
their training maps differentiate through the dynamic scales; here the forward pass of the
guided batch runs in explanation mode, as the B-cos papers define the explanation.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import LayerCapture, check_images, resolve_layer
from xgir.explain.gradcam import finish_maps, forward_logits, layer_gradients, read_targets
from xgir.models.bcos import explanation_mode, input_encoding


def feature_gradients(
    model: nn.Module, x: torch.Tensor, targets: Any, *, layer: str | nn.Module | None = None,
    explanation: bool = True, create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a float[N,C,u,v], d s / d a float[N,T,C,u,v]) for the model's input a (its encoding's
    output if it has one, else x) or the output of ``layer``; in explanation mode when
    ``explanation``. Gradients keep their graph when ``create_graph``."""
    check_images(x)
    if create_graph and torch.is_inference_mode_enabled():
        raise XgirError("differentiable contributions cannot run inside torch.inference_mode()")
    module = resolve_layer(model, layer) if layer is not None else input_encoding(model)
    mode = explanation_mode(model) if explanation else contextlib.nullcontext()
    capture = LayerCapture(module) if module is not None else contextlib.nullcontext()
    with torch.enable_grad(), mode, capture as cap:
        xin = x.detach().requires_grad_(True)
        logits = forward_logits(model, xin)
        feature = cap.get(module) if cap is not None else xin
        if feature.ndim != 4:
            raise XgirError(f"contributions need a layer with output [N,C,u,v]; {layer!r} gives "
                            f"shape {tuple(feature.shape)}")
        scores = read_targets(targets, logits).scores(logits)
        grads = layer_gradients(scores, feature, create_graph=create_graph)
    if not create_graph:
        return feature.detach(), grads.detach()
    return feature, grads


def contributions(
    model: nn.Module, x: torch.Tensor, targets: Any, *, layer: str | nn.Module | None = None,
    explanation: bool = True, create_graph: bool = False, upsample: bool = True,
) -> torch.Tensor:
    """Contribution maps float[N,T,H,W] (see the module docstring): sum over channels of
    a * d s / d a, at the input or ``layer`` (bilinearly upsampled to x's size unless
    ``upsample=False``: then float[N,T,u,v]). ``explanation=False`` leaves the dynamic scales
    in the graph (plain input x gradient)."""
    feature, grads = feature_gradients(model, x, targets, layer=layer, explanation=explanation,
                                       create_graph=create_graph)
    maps = (grads * feature[:, None]).sum(2)
    return finish_maps(maps, relu=False, size=tuple(x.shape[-2:]) if upsample else None)  # type: ignore[arg-type]


def colour_image(encoded: torch.Tensor, weights: torch.Tensor, *, smooth: int = 15,
                 percentile: float = 99.5) -> torch.Tensor:
    """The colour explanation of the B-cos figures, float[N,H,W,4] (RGBA in [0, 1]).

    encoded: the model's input [x, 1 - x] float[N,2C,H,W]; weights: W(x) = d s / d encoded,
    same shape. Per pixel the weight vector is scaled to max |w| = 1 and clipped at 0; colour
    channel c is w_c / (w_c + w_{c+C}) (grey for C = 1); alpha is ||w||_2, zero where the
    pixel's contribution sum_c w_c a_c is negative, averaged over a ``smooth`` x ``smooth``
    window (zero padding counted; 0 or 1: none) and divided by its ``percentile``-th
    percentile per image, clipped to [0, 1]. Reference: B-cos v2's ``gradient_to_image`` (one
    image there; batched here; equal to it, tests/test_bcos.py).
    """
    if encoded.ndim != 4 or encoded.shape != weights.shape or encoded.shape[1] % 2:
        raise XgirError(f"colour_image needs encoded inputs and weights of the same shape [N,2C,H,W], got "
                        f"{tuple(encoded.shape)} and {tuple(weights.shape)}")
    if not 0 < percentile <= 100:
        raise XgirError(f"percentile must be in (0, 100], got {percentile}")
    c = encoded.shape[1] // 2
    w = weights.detach()
    contrib = (encoded.detach() * w).sum(1, keepdim=True)
    scaled = (w / (w.abs().amax(1, keepdim=True) + 1e-12)).clamp(min=0)
    rgb = scaled[:, :c] / (scaled[:, :c] + scaled[:, c:] + 1e-12)
    if c == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    alpha = torch.where(contrib < 0, torch.zeros_like(contrib), w.norm(dim=1, keepdim=True))
    if smooth > 1:
        alpha = F.avg_pool2d(alpha, smooth, stride=1, padding=smooth // 2)
        alpha = alpha[..., : rgb.shape[-2], : rgb.shape[-1]]
    top = torch.quantile(alpha.flatten(1), percentile / 100, dim=1).view(-1, 1, 1, 1)
    alpha = (alpha / top.clamp(min=1e-12)).clamp(0, 1)
    return torch.cat([rgb[:, :3], alpha], 1).permute(0, 2, 3, 1)


def colour_explanation(model: nn.Module, x: torch.Tensor, targets: Any, *, smooth: int = 15,
                       percentile: float = 99.5) -> torch.Tensor:
    """RGBA explanations float[N,H,W,4] of one target per image (:func:`colour_image` of a
    B-cos model's encoded input and its dynamic weights); XgirError for a model without the
    [x, 1 - x] encoding or for more than one target per image."""
    if input_encoding(model) is None:
        raise XgirError("the colour explanation needs a B-cos model with the [x, 1 - x] input encoding "
                        "(bcos-resnet)")
    encoded, grads = feature_gradients(model, x, targets)
    if grads.shape[1] != 1:
        raise XgirError(f"the colour explanation takes one target per image, got {grads.shape[1]}")
    return colour_image(encoded, grads[:, 0], smooth=smooth, percentile=percentile)


def plot_colour(images: torch.Tensor, rgba: torch.Tensor, path: str | Path, *,
                col_titles: list[str] | None = None) -> Path:
    """A PNG of images float[N,C,H,W] (first column) beside their colour explanations
    float[N,T,H,W,4] (:func:`colour_explanation`), drawn on black as in the B-cos figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xgir.io import save_figure
    from xgir.viz import to_display

    n, t = rgba.shape[:2]
    fig, axes = plt.subplots(n, t + 1, figsize=(1.7 * (t + 1), 1.7 * n), squeeze=False)
    for i in range(n):
        shown = to_display(images[i])
        axes[i, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
        for j in range(t):
            axes[i, j + 1].imshow(np.zeros(tuple(rgba.shape[2:4])), cmap="gray", vmin=0, vmax=1)
            axes[i, j + 1].imshow(rgba[i, j].detach().float().cpu().clamp(0, 1).numpy())
            if col_titles is not None and i == 0:
                axes[i, j + 1].set_title(col_titles[j], fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


class Bcos:
    """B-cos contribution explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``
    (:func:`contributions` in explanation mode).

    Args:
        layer: module path to read the contributions at (default None: the input).
        upsample: bilinear upsampling of a layer's maps to the input size.
    """

    def __init__(self, *, layer: str | None = None, upsample: bool = True) -> None:
        self.layer, self.upsample = layer, upsample

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        return contributions(model, x, targets, layer=self.layer, upsample=self.upsample)
