"""The gradient-weighted CAM family and Eigen-CAM, batched over images and targets like Grad-CAM.

For a layer with activations A[n,k,u,v] (float[N,K,u,v]) and the score y[n,t] of target t of
image n (a logit, a cluster's generalised logit or weighted logits, :mod:`xgir.explain.targets`),
with g = dy[n,t]/dA[n] (float[N,T,K,u,v]), each method gives a map M[n,t] float[u,v]:

- Grad-CAM++ (Chattopadhay et al., WACV 2018), alpha weights in closed form from the first
  gradient (the exponential-score trick: second and third derivatives of exp(y) are powers of
  g), as pytorch-grad-cam computes them::

      a[k,u,v] = g^2 / (2 g^2 + sum_uv(A[k]) g^3 + 1e-6)      (0 where g == 0)
      w[k] = sum_uv relu(g[k,u,v]) a[k,u,v]                    M = sum_k w[k] A[k]

- XGrad-CAM (Fu et al., BMVC 2020): w[k] = sum_uv(g[k] A[k]) / (sum_uv A[k] + 1e-7),
  M = sum_k w[k] A[k];
- LayerCAM (Jiang et al., TIP 2021): M = sum_k relu(g[k]) * A[k] (elementwise);
- HiResCAM (Draelos & Carin, 2020): M = sum_k g[k] * A[k] (elementwise);
- Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): class-agnostic, no gradient. The activations as a
  (u*v) x K matrix, each channel centred over the positions, projected on their first right
  singular vector: M = (A^T - mean) v_1, reshaped to [u,v]; the same map for every target
  (v_1's sign as numpy's SVD gives it, as in pytorch-grad-cam; see :func:`eigen_projection`).

then, as for Grad-CAM, ReLU (optional) and bilinear upsampling to the input size (optional,
``align_corners=False``). The gradient methods share Grad-CAM's machinery
(:func:`xgir.explain.gradcam.grad_cam_layers`): ONE forward pass per batch, the network before
the layer run without an autograd graph, and the T vector-Jacobian products batched
(``is_grads_batched``); ``differentiable=True`` keeps the graph so the maps train the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import LayerCapture, check_images, default_layer, resolve_layer
from xgir.explain.gradcam import (
    STRATEGIES,
    Combine,
    finish_maps,
    forward_logits,
    grad_cam_layers,
    gradcam_combine,
    read_targets,
)

GRADPP_EPS = 1e-6  # pytorch-grad-cam's constant in the Grad-CAM++ alpha denominator
XGRAD_EPS = 1e-7  # pytorch-grad-cam's constant in XGrad-CAM's denominator


def gradcam_pp_combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: A float[N,K,u,v], g float[N,T,K,u,v] -> float[N,T,u,v] (module docstring)."""
    g2 = grads.square()
    g3 = g2 * grads
    total = activation.sum(dim=(-2, -1))[:, None, :, None, None]  # [N,1,K,1,1]
    alpha = g2 / (2 * g2 + total * g3 + GRADPP_EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (grads.clamp(min=0) * alpha).sum(dim=(-2, -1))  # [N,T,K]
    return torch.einsum("ntk,nkuv->ntuv", weights, activation)


def xgradcam_combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: w[k] = sum_uv(g A) / (sum_uv A + 1e-7); float[N,T,u,v]."""
    total = activation.sum(dim=(-2, -1))[:, None]  # [N,1,K]
    weights = (grads * activation[:, None]).sum(dim=(-2, -1)) / (total + XGRAD_EPS)
    return torch.einsum("ntk,nkuv->ntuv", weights, activation)


def layercam_combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: sum_k relu(g[k]) * A[k]; float[N,T,u,v]."""
    return torch.einsum("ntkuv,nkuv->ntuv", grads.clamp(min=0), activation)


def hirescam_combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: sum_k g[k] * A[k]; float[N,T,u,v]."""
    return torch.einsum("ntkuv,nkuv->ntuv", grads, activation)


COMBINE: dict[str, tuple[str, Combine]] = {
    "gradcam": ("Grad-CAM", gradcam_combine),
    "gradcam++": ("Grad-CAM++", gradcam_pp_combine),
    "xgradcam": ("XGrad-CAM", xgradcam_combine),
    "layercam": ("LayerCAM", layercam_combine),
    "hirescam": ("HiResCAM", hirescam_combine),
}
"""Registry name -> (display name, combination) of every gradient-weighted CAM."""


def _combine(method: str) -> tuple[str, Combine]:
    if method not in COMBINE:
        raise XgirError(f"unknown gradient CAM '{method}'; choose one of: {', '.join(COMBINE)}")
    return COMBINE[method]


def gradient_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layer: str | nn.Module,
    *,
    method: str = "gradcam++",
    relu: bool = True,
    upsample: bool = True,
    strategy: str = "batched",
    differentiable: bool = False,
) -> torch.Tensor:
    """A gradient CAM (``method`` = ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam`` or
    ``gradcam``) of every (image, target) pair.

    Args:
        model: classifier returning logits float[N,K] (put it in eval mode yourself).
        x: images float[N,C,H,W].
        targets: any form :func:`xgir.explain.targets.as_targets` reads.
        layer: module path of a layer with output [N,K',u,v].
        relu, upsample, strategy, differentiable: as :func:`xgir.explain.gradcam.grad_cam`.

    Returns:
        float[N,T,H,W] (float[N,T,u,v] without upsampling), on x's device.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3)).eval()
    >>> gradient_cam(net, torch.rand(4, 1, 8, 8), [0, 2], "1", method="xgradcam").shape
    torch.Size([4, 2, 8, 8])
    """
    name, combine = _combine(method)
    return grad_cam_layers(model, x, [(layer, targets)], relu=relu, upsample=upsample, strategy=strategy,
                           differentiable=differentiable, combine=combine, name=name)[1][0]


def grad_cam_plus_plus(model: nn.Module, x: torch.Tensor, targets: Any, layer: str | nn.Module,
                       **options: Any) -> torch.Tensor:
    """Grad-CAM++ maps float[N,T,H,W]; options as :func:`gradient_cam`."""
    return gradient_cam(model, x, targets, layer, method="gradcam++", **options)


def xgrad_cam(model: nn.Module, x: torch.Tensor, targets: Any, layer: str | nn.Module,
              **options: Any) -> torch.Tensor:
    """XGrad-CAM maps float[N,T,H,W]; options as :func:`gradient_cam`."""
    return gradient_cam(model, x, targets, layer, method="xgradcam", **options)


def layer_cam(model: nn.Module, x: torch.Tensor, targets: Any, layer: str | nn.Module,
              **options: Any) -> torch.Tensor:
    """LayerCAM maps float[N,T,H,W]; options as :func:`gradient_cam`."""
    return gradient_cam(model, x, targets, layer, method="layercam", **options)


def hires_cam(model: nn.Module, x: torch.Tensor, targets: Any, layer: str | nn.Module,
              **options: Any) -> torch.Tensor:
    """HiResCAM maps float[N,T,H,W]; options as :func:`gradient_cam`."""
    return gradient_cam(model, x, targets, layer, method="hirescam", **options)


class _GradientCAM:
    """A gradient CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        layer: module path (``"layer3"``); None picks the model's last top-level child with a
            spatial output (:func:`xgir.explain._hooks.default_layer`).
        relu: clip negative values of the map.
        upsample: bilinear upsampling to the input size (else float[N,T,u,v]).
        strategy: ``"batched"`` (one vmapped backward for the T targets) or ``"loop"``.
    """

    method = "gradcam"

    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 strategy: str = "batched") -> None:
        if strategy not in STRATEGIES:
            raise XgirError(f"unknown gradient strategy '{strategy}'; choose batched or loop")
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.strategy = strategy

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        check_images(x)
        layer = self.layer if self.layer is not None else default_layer(model, x)
        return gradient_cam(model, x, targets, layer, method=self.method, relu=self.relu,
                            upsample=self.upsample, strategy=self.strategy)


class GradCAMPlusPlus(_GradientCAM):
    """Grad-CAM++ explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``; parameters ``layer``,
    ``relu``, ``upsample``, ``strategy`` as :class:`xgir.explain.gradcam.GradCAM`."""
    method = "gradcam++"


class XGradCAM(_GradientCAM):
    """XGrad-CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``; parameters ``layer``,
    ``relu``, ``upsample``, ``strategy`` as :class:`xgir.explain.gradcam.GradCAM`."""
    method = "xgradcam"


class LayerCAM(_GradientCAM):
    """LayerCAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``; parameters ``layer``,
    ``relu``, ``upsample``, ``strategy`` as :class:`xgir.explain.gradcam.GradCAM`."""
    method = "layercam"


class HiResCAM(_GradientCAM):
    """HiResCAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]``; parameters ``layer``,
    ``relu``, ``upsample``, ``strategy`` as :class:`xgir.explain.gradcam.GradCAM`."""
    method = "hirescam"


# ---- Eigen-CAM ----------------------------------------------------------------------------------

def eigen_projection(activation: torch.Tensor, *, svd: str = "numpy", sign_correction: bool = False) -> torch.Tensor:
    """First principal component of each image's activations, float[N,u,v] from float[N,K,u,v].

    Each image's activations as a (u*v) x K matrix X, every channel centred over the positions,
    projected on the first right singular vector v_1 of X: ``X v_1`` (= s_1 u_1).

    The sign of v_1 is arbitrary; it is the SVD's. ``svd="numpy"`` (default) takes v_1 from
    numpy's SVD on the CPU, as pytorch-grad-cam does, so that the signs (and so which maps
    survive the ReLU) are the same as in pytorch-grad-cam. PyTorch's SVD picks the other sign
    for some matrices. ``svd="torch"`` computes it on the activations' device, and the result is
    differentiable. ``sign_correction`` flips each map whose largest magnitude is negative
    (Seg-Eigen-CAM's correction), which makes the sign independent of the SVD.
    """
    if svd not in ("numpy", "torch"):
        raise XgirError(f"svd must be 'numpy' or 'torch', got {svd!r}")
    n, k, u, v = activation.shape
    mat = activation.reshape(n, k, u * v).transpose(1, 2)  # [N,uv,K]
    mat = torch.nan_to_num(mat, nan=0.0)
    mat = mat - mat.mean(dim=1, keepdim=True)
    if svd == "torch":
        first = torch.linalg.svd(mat, full_matrices=False)[2][:, 0]  # [N,K]
    else:
        import numpy as np

        host = mat.detach().cpu().numpy()
        first = torch.from_numpy(np.stack([np.linalg.svd(m, full_matrices=True)[2][0] for m in host]))
        first = first.to(mat.device, mat.dtype)
    proj = torch.einsum("npk,nk->np", mat, first)
    if sign_correction:
        flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
        proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(n, u, v)


def eigen_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layer: str | nn.Module,
    *,
    relu: bool = True,
    upsample: bool = True,
    svd: str = "numpy",
    sign_correction: bool = False,
    differentiable: bool = False,
) -> torch.Tensor:
    """Eigen-CAM maps float[N,T,H,W]: one forward pass, the map of :func:`eigen_projection` at
    ``layer`` for every image, repeated for each of its T targets (the method is class-agnostic;
    the targets are read and checked all the same). ``differentiable``: keep the graph (needs
    ``svd="torch"``; the SVD is differentiable where the first singular value is simple)."""
    if differentiable and svd != "torch":
        raise XgirError("a differentiable Eigen-CAM needs svd='torch' (numpy's SVD has no gradient)")
    check_images(x)
    module = resolve_layer(model, layer)
    graph = torch.enable_grad() if differentiable else torch.no_grad()
    with graph, LayerCapture(module) as cap:
        logits = forward_logits(model, x)
        act = cap.get(module)
        if act.ndim != 4:
            raise XgirError(f"Eigen-CAM needs a layer with output [N,K,u,v]; '{layer}' gives "
                            f"shape {tuple(act.shape)}")
        tg = read_targets(targets, logits)
        proj = eigen_projection(act if differentiable else act.detach(), svd=svd, sign_correction=sign_correction)
        size = (int(x.shape[-2]), int(x.shape[-1])) if upsample else None
        maps = finish_maps(proj[:, None], relu=relu, size=size)
    return maps.expand(-1, tg.shape[1], -1, -1).clone()


class EigenCAM:
    """Eigen-CAM explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]`` (class-agnostic:
    the same map for every target of an image).

    Args:
        layer: module path; None picks the model's last top-level child with a spatial output.
        relu: clip negative values (pytorch-grad-cam clips them too).
        upsample: bilinear upsampling to the input size.
        svd: ``"numpy"`` (pytorch-grad-cam's sign convention) or ``"torch"`` (on the device).
        sign_correction: flip a map whose largest magnitude is negative (see
            :func:`eigen_projection`); off by default, as pytorch-grad-cam's Eigen-CAM.
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True, upsample: bool = True,
                 svd: str = "numpy", sign_correction: bool = False) -> None:
        if svd not in ("numpy", "torch"):
            raise XgirError(f"svd must be 'numpy' or 'torch', got {svd!r}")
        self.svd = svd
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.sign_correction = sign_correction

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        check_images(x)
        layer = self.layer if self.layer is not None else default_layer(model, x)
        return eigen_cam(model, x, targets, layer, relu=self.relu, upsample=self.upsample, svd=self.svd,
                         sign_correction=self.sign_correction)
