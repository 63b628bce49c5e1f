"""Grad-CAM, batched over images and targets.

For a layer with activations A[n,k,u,v] and the score y[n,t] of target t of image n
(a logit, a cluster's generalised logit logsumexp_{c in C} z_c or weighted logits):
alpha[n,t,k] = mean_uv dy[n,t]/dA[n,k,u,v]; map[n,t] = sum_k alpha[n,t,k] A[n,k];
ReLU and bilinear upsampling to the input size are optional.

One forward pass per batch: the prefix of the network up to the layer runs without
an autograd graph, and the T vector-Jacobian products go through the network's tail
only, batched with ``torch.autograd.grad(..., is_grads_batched=True)``.

With ``differentiable=True`` the whole forward pass keeps its graph and the gradients are
taken with ``create_graph=True``: the maps are then differentiable functions of the model's
parameters (and of x), so a loss on them trains the model (the Grad-CAM guidance losses of
:mod:`xgir.correct.guidance` use this). The maps are the same numbers either way.

The model's mode is not changed: call ``model.eval()`` first (batch norm and dropout
in training mode give other maps). Model and images may be on any device; the maps
come back on the images' device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import LayerCapture, check_images, default_layer, resolve_layer
from xgir.explain.targets import Targets, as_targets

STRATEGIES = ("batched", "loop")


def layer_gradients(scores: torch.Tensor, activation: torch.Tensor, *, strategy: str = "batched",
                    retain_graph: bool = False, create_graph: bool = False) -> torch.Tensor:
    """d scores[n,t] / d activation[n], float[N,T,*activation.shape[1:]].

    Assumes each image's scores depend only on its own activation (no batch mixing, i.e.
    batch norm in eval mode; with one target per image it is the gradient of the summed
    scores either way). ``strategy``: ``"batched"`` (one vmapped backward over T one-hot grad
    outputs) or ``"loop"`` (T backward passes through the same graph). ``create_graph``: the
    gradients keep a graph (differentiable in the parameters; the graph is then retained).
    """
    if strategy not in STRATEGIES:
        raise XgirError(f"unknown gradient strategy '{strategy}'; choose batched or loop")
    n, t = scores.shape
    retain = retain_graph or create_graph
    if t == 1:
        (g,) = torch.autograd.grad(scores.sum(), activation, retain_graph=retain, create_graph=create_graph)
        return g[:, None]
    if strategy == "batched":
        eye = torch.eye(t, dtype=scores.dtype, device=scores.device)
        grad_outputs = eye[:, None, :].expand(t, n, t)
        (g,) = torch.autograd.grad(scores, activation, grad_outputs=grad_outputs, is_grads_batched=True,
                                   retain_graph=retain, create_graph=create_graph)
        return g.transpose(0, 1)
    grads = [
        torch.autograd.grad(scores[:, j].sum(), activation, retain_graph=retain or j < t - 1,
                            create_graph=create_graph)[0]
        for j in range(t)
    ]
    return torch.stack(grads, dim=1)


Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""How a gradient CAM combines A float[N,K,u,v] and dy/dA float[N,T,K,u,v] into maps float[N,T,u,v]."""


def gradcam_combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's combination: sum_k mean_uv(dy/dA[k]) A[k], float[N,T,u,v]."""
    alpha = grads.mean(dim=(-2, -1))  # [N,T,K]
    return torch.einsum("ntk,nkuv->ntuv", alpha, activation)


def finish_maps(cams: torch.Tensor, *, relu: bool = True, size: tuple[int, int] | None = None) -> torch.Tensor:
    """ReLU (optional) and bilinear upsampling (align_corners=False) of maps float[N,T,u,v] to
    float[N,T,*size] when ``size`` is given (the last steps of every CAM)."""
    if relu:
        cams = cams.clamp(min=0)
    if size is not None and tuple(cams.shape[-2:]) != tuple(size):
        n, t = cams.shape[:2]
        flat = cams.reshape(n * t, 1, *cams.shape[-2:])
        cams = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        cams = cams.reshape(n, t, *size)
    return cams


def cam_from_gradients(activation: torch.Tensor, grads: torch.Tensor, *, relu: bool = True,
                       size: tuple[int, int] | None = None, differentiable: bool = False,
                       combine: Combine = gradcam_combine) -> torch.Tensor:
    """Grad-CAM maps from A float[N,K,u,v] and dy/dA float[N,T,K,u,v]: float[N,T,u,v], or
    float[N,T,*size] bilinearly upsampled (align_corners=False) when ``size`` is given.
    ``differentiable``: keep A's graph (else A is detached). ``combine``: another gradient
    CAM's combination (:mod:`xgir.explain.cams`)."""
    act = activation if differentiable else activation.detach()
    return finish_maps(combine(act, grads), relu=relu, size=size)


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked: logits float[N,K], finite; XgirError otherwise."""
    try:
        logits = model(x)
    except RuntimeError as err:  # e.g. wrong channel count or image size for the model
        first = (str(err).splitlines() or [""])[0]
        raise XgirError(f"the model cannot take images of shape {tuple(x.shape)}: {first}") from None
    ok = isinstance(logits, torch.Tensor) and logits.ndim == 2
    if not ok or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise XgirError(f"the model must return logits [N,K]; got {shape}")
    if not bool(torch.isfinite(logits).all()):
        raise XgirError("the model's outputs hold NaN or infinite values (a diverged or broken model); "
                        "nothing to explain")
    return logits


def read_targets(targets: Any, logits: torch.Tensor) -> Targets:
    """``targets`` (any :func:`~xgir.explain.targets.as_targets` form, or a callable of the detached
    logits) as :class:`Targets` on the logits' device, checked (T >= 1, finite weights)."""
    if callable(targets) and not isinstance(targets, Targets):
        targets = targets(logits.detach())
    tg = as_targets(targets, logits.shape[0], logits.shape[1]).to(logits.device)
    if tg.shape[1] == 0:
        raise XgirError("no targets given: targets must name at least one class per image ([N,T], T >= 1)")
    if not bool(torch.isfinite(tg.weights).all()):
        raise XgirError("target weights contain NaN or infinite values")
    return tg


TargetsOrFn = Any  # targets in any as_targets form, or a callable logits[N,K] -> such targets


def grad_cam_layers(
    model: nn.Module,
    x: torch.Tensor,
    requests: Sequence[tuple[str | nn.Module, TargetsOrFn]],
    *,
    relu: bool = True,
    upsample: bool = True,
    strategy: str = "batched",
    differentiable: bool = False,
    combine: Combine = gradcam_combine,
    name: str = "Grad-CAM",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Grad-CAM at several layers, each with its own targets, from ONE forward pass.

    Args:
        requests: (layer, targets) pairs; ``targets`` may be a callable taking the detached
            logits float[N,K] and returning targets (to pick them from this forward pass).
        differentiable: maps (and logits) keep the autograd graph of the parameters (see the
            module docstring); else they are detached and the prefix runs without a graph.
        combine: how A and dy/dA make the maps (default Grad-CAM's; the other gradient CAMs of
            :mod:`xgir.explain.cams` pass theirs); ``name`` names the method in errors.

    Returns:
        (logits float[N,K], one map tensor float[N,T_i,H,W] per request).
    """
    check_images(x)
    if not requests:
        raise XgirError(f"no {name} request given")
    if strategy not in STRATEGIES:
        raise XgirError(f"unknown gradient strategy '{strategy}'; choose batched or loop")
    if differentiable and torch.is_inference_mode_enabled():
        raise XgirError(f"differentiable {name} cannot run inside torch.inference_mode()")
    modules = [resolve_layer(model, layer) for layer, _ in requests]
    graph = torch.enable_grad() if differentiable else contextlib.nullcontext()
    with graph, LayerCapture(modules, cut=not differentiable) as cap:
        logits = forward_logits(model, x)
        acts = [cap.get(m) for m in modules]
        for (layer, _), act in zip(requests, acts, strict=True):
            if act.ndim != 4:
                raise XgirError(f"{name} needs a layer with output [N,K,u,v]; '{layer}' gives "
                                f"shape {tuple(act.shape)}")
        size = tuple(x.shape[-2:]) if upsample else None
        cams = []
        with torch.enable_grad():
            for i, ((_, targets), act) in enumerate(zip(requests, acts, strict=True)):
                tg = read_targets(targets, logits)
                scores = tg.scores(logits)
                grads = layer_gradients(scores, act, strategy=strategy, retain_graph=i < len(requests) - 1,
                                        create_graph=differentiable)
                cams.append(cam_from_gradients(act, grads, relu=relu, size=size,  # type: ignore[arg-type]
                                               differentiable=differentiable, combine=combine))
    return (logits if differentiable else logits.detach()), cams


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layer: str | nn.Module,
    *,
    relu: bool = True,
    upsample: bool = True,
    strategy: str = "batched",
    differentiable: bool = False,
) -> torch.Tensor:
    """Grad-CAM maps of every (image, target) pair.

    Args:
        model: classifier returning logits float[N,K] (put it in eval mode yourself).
        x: images float[N,C,H,W].
        targets: any form :func:`xgir.explain.targets.as_targets` reads.
        layer: module path of a layer with output [N,K',u,v] (e.g. ``"layer3"``).
        relu: clip negative evidence (standard Grad-CAM).
        upsample: bilinear upsampling (align_corners=False) to (H, W).
        strategy: how the T backward products are done, see :func:`layer_gradients`.
        differentiable: the maps keep the autograd graph, so a loss on them back-propagates
            into every parameter (also those before the layer); else they are detached.

    Returns:
        float[N,T,H,W] (float[N,T,u,v] without upsampling), on x's device.

    Two targets (classes 0 and 2) for each of 4 images, at the ReLU after the conv:

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3)).eval()
    >>> maps = grad_cam(net, torch.rand(4, 1, 8, 8), [0, 2], "1")
    >>> tuple(maps.shape), bool((maps >= 0).all())
    ((4, 2, 8, 8), True)
    """
    return grad_cam_layers(model, x, [(layer, targets)], relu=relu, upsample=upsample, strategy=strategy,
                           differentiable=differentiable)[1][0]


class GradCAM:
    """Grad-CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        layer: module path (``"layer3"``); None picks the model's last top-level child with a
            spatial output (:func:`xgir.explain._hooks.default_layer`).
        relu: clip negative values of the map.
        upsample: bilinear upsampling to the input size (else float[N,T,u,v]).
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 strategy: str = "batched") -> None:
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.strategy = strategy

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        check_images(x)
        layer = self.layer if self.layer is not None else default_layer(model, x)
        return grad_cam(model, x, targets, layer, relu=self.relu, upsample=self.upsample, strategy=self.strategy)
