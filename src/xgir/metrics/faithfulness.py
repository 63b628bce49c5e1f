"""Faithfulness: deletion and insertion curves and their areas (Petsiuk et al., RISE).

Pixels are ordered by saliency, most salient first (ties in row-major order).
*Deletion* replaces them, ``step`` pixels at a time, by a baseline (default ``"zeros"``);
*insertion* starts from a baseline (default ``"blur"``: :func:`xgir.data.blur.gaussian_blur`,
sigma max(H, W) / 8, the same image as the IG "blur" baseline and XGIR's blurred x0) and puts
the original pixels back in the same order. Baseline names are those of
:mod:`xgir.explain.baselines` (``zeros`` / ``zero``, ``mean`` = the image's mean colour,
``blur``, ``uniform``). After
each step the model scores the softmax probability of the original top class (or
of a given class). With P = H*W pixels there are S = ceil(P / step) steps; point s
of the curve is at x_s = min(s * step, P) / P, and the AUC is the trapezoid rule
over x in [0, 1]. Deletion: lower is more faithful; insertion: higher.

All (image, step) pairs are built as tensors on the model's device and scored in
batches of ``batch_size`` perturbed images, so there is no loop over pixels or
images. The model is put in eval mode for the call and restored afterwards.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.blur import gaussian_blur
from xgir.errors import XgirError
from xgir.explain.baselines import reference_image

__all__ = ["PerturbationCurves", "auc", "default_batch_size", "default_step", "deletion", "gaussian_blur",
           "insertion", "perturbation_curves", "step_fractions"]  # gaussian_blur: home xgir.data.blur


class PerturbationCurves(NamedTuple):
    """curves float[N,S+1] (or [N,T,S+1]): probability after each step; auc float[N] (or [N,T])."""

    curves: torch.Tensor
    auc: torch.Tensor


def step_fractions(num_pixels: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """x positions float[S+1] of the curve points: the fraction of pixels perturbed."""
    s = math.ceil(num_pixels / step)
    k = (torch.arange(s + 1, device=device) * step).clamp(max=num_pixels)
    return k.float() / num_pixels


def default_batch_size(x: torch.Tensor) -> int:
    """Perturbed images per forward pass when none is given: on CUDA about 2^24 input values
    (16 to 2048 images); on the CPU about 2^16 pixels (4 to 256 images), which keeps the first
    activations in cache (the fastest setting measured with a small CNN on 28x28 and 64x64
    inputs; large CPU batches were slower per image)."""
    c, h, w = x.shape[1:]
    if x.device.type == "cuda":
        return int(min(2048, max(16, 2**24 // (c * h * w))))
    return int(min(256, max(4, 2**16 // (h * w))))


def default_step(num_pixels: int) -> int:
    """Default pixels per step: about 100 steps per curve."""
    return max(1, math.ceil(num_pixels / 100))


def auc(curves: torch.Tensor, fractions: torch.Tensor | None = None) -> torch.Tensor:
    """Area under curves float[...,S+1] by the trapezoid rule on x in [0, 1] (evenly spaced
    when ``fractions`` is None)."""
    if curves.shape[-1] < 2:
        raise XgirError("a curve needs at least 2 points to have an area")
    if fractions is None:
        fractions = torch.linspace(0, 1, curves.shape[-1], device=curves.device)
    return torch.trapezoid(curves, x=fractions.to(curves.device, curves.dtype), dim=-1)


def _baseline(baseline: object, x: torch.Tensor, mode: str) -> torch.Tensor:
    if baseline is None:
        baseline = "zeros" if mode == "deletion" else "blur"
    if isinstance(baseline, str):
        return reference_image(baseline, x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(x.device, x.dtype), x.shape)
        except RuntimeError:
            raise XgirError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the images "
                f"{tuple(x.shape)}"
            ) from None
    raise XgirError(f"cannot use baseline of type {type(baseline).__name__}")


def _check(x: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise XgirError(f"images must be [N,C,H,W], got {getattr(x, 'shape', type(x))}")
    if not isinstance(saliency, torch.Tensor) or saliency.ndim not in (3, 4):
        raise XgirError(
            "saliency must be [N,H,W] or [N,T,H,W], "
            f"got {getattr(saliency, 'shape', type(saliency))}"
        )
    sal = saliency[:, None] if saliency.ndim == 3 else saliency
    if sal.shape[0] != x.shape[0]:
        raise XgirError(f"{sal.shape[0]} saliency maps for {x.shape[0]} images")
    sal = sal.float()
    if not bool(torch.isfinite(sal).all()):
        raise XgirError("saliency maps contain NaN or infinite values")
    if not bool(torch.isfinite(x).all()):
        raise XgirError("images contain NaN or infinite values")
    n, t = sal.shape[:2]
    if sal.shape[-2:] != x.shape[-2:]:
        sal = F.interpolate(
            sal.reshape(n * t, 1, *sal.shape[-2:]),
            size=tuple(x.shape[-2:]),
            mode="bilinear",
            align_corners=False,
        ).reshape(n, t, *x.shape[-2:])
    return sal, t


def _classes(targets: object, logits: torch.Tensor, n: int, t: int) -> torch.Tensor:
    """Class to score per (image, map): long[N,T]."""
    k = logits.shape[1]
    if targets is None:
        cls = logits.argmax(1)[:, None].expand(n, t)
    elif isinstance(targets, int) and not isinstance(targets, bool):
        cls = torch.full((n, t), targets, dtype=torch.long)
    elif isinstance(targets, torch.Tensor) and not targets.is_floating_point():
        cls = targets.long()
        if cls.ndim == 0:
            cls = cls.expand(n)
        if cls.ndim == 1:
            cls = cls[:, None]
        if cls.shape[0] != n or cls.shape[1] not in (1, t):
            raise XgirError(
                f"targets must be [N] or [N,T] with N={n}, T={t}; got {tuple(targets.shape)}"
            )
        cls = cls.expand(n, t)
    else:
        raise XgirError(
            "targets must be None (top class), a class index or a long tensor [N] / [N,T]"
        )
    cls = cls.to(logits.device)
    if bool((cls < 0).any() | (cls >= k).any()):
        raise XgirError(f"target classes must lie in [0, {k - 1}]")
    return cls


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    mode: str = "deletion",
    targets: object = None,
    step: int | None = None,
    baseline: object = None,
    batch_size: int | None = None,
) -> PerturbationCurves:
    """Deletion or insertion curves of ``saliency`` maps on images ``x``.

    Args:
        model: classifier returning logits; x float[N,C,H,W] on its device.
        saliency: float[N,H,W] or [N,T,H,W] (bilinearly resized to x's size if needed).
        mode: ``"deletion"`` or ``"insertion"``.
        targets: class scored: None = the model's top class on x; an int; long [N] or [N,T].
        step: pixels per step (default ~P/100).
        baseline: a name of :mod:`xgir.explain.baselines` (``"zeros"`` (or ``"zero"``),
            ``"blur"``, ``"mean"``, ``"uniform"``), a number or a tensor broadcastable to x.
            Default zeros for deletion, blur for insertion (the start image).
        batch_size: perturbed images per forward pass (bounds memory); default
            :func:`default_batch_size`.

    Returns:
        curves float[N,S+1] and auc float[N] ([N,T,S+1], [N,T] for [N,T,H,W] saliency), on x's
        device.
    """
    if mode not in ("deletion", "insertion"):
        raise XgirError(f"mode must be 'deletion' or 'insertion', got '{mode}'")
    sal, t = _check(x, saliency)
    n, c, h, w = x.shape
    p = h * w
    step = default_step(p) if step is None else int(step)
    if step < 1:
        raise XgirError(f"step must be at least 1 pixel, got {step}")
    step = min(step, p)  # a larger step perturbs the whole image at once, as step = p does
    batch_size = default_batch_size(x) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise XgirError(f"batch_size must be at least 1, got {batch_size}")
    device = x.device
    base = _baseline(baseline, x, mode)
    fractions = step_fractions(p, step, device)
    counts = (fractions * p).round().long()  # pixels perturbed at each point, [S+1]
    s1 = counts.numel()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cls = _classes(targets, model(x), n, t).reshape(n * t)
            # rank[m, q] = position of pixel q in map m's saliency order (0 = most salient)
            order = torch.argsort(
                sal.to(device).reshape(n * t, p), dim=1, descending=True, stable=True
            )
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(p, device=device).expand(n * t, p))
            src, dst = (x, base) if mode == "deletion" else (base, x)
            src, dst = src.reshape(n, c, p), dst.reshape(n, c, p)
            scores = torch.empty(n * t * s1, device=device)
            for start in range(0, n * t * s1, batch_size):
                idx = torch.arange(start, min(start + batch_size, n * t * s1), device=device)
                m_idx, s_idx = idx // s1, idx % s1
                img = m_idx // t
                changed = rank[m_idx] < counts[s_idx][:, None]  # [B,P]
                batch = torch.where(changed[:, None, :], dst[img], src[img]).reshape(-1, c, h, w)
                prob = torch.softmax(model(batch).float(), dim=1)
                scores[idx] = prob.gather(1, cls[m_idx][:, None])[:, 0]
    finally:
        model.train(was_training)
    curves = scores.reshape(n, t, s1)
    area = auc(curves, fractions)
    if saliency.ndim == 3:
        return PerturbationCurves(curves[:, 0], area[:, 0])
    return PerturbationCurves(curves, area)


def deletion(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    targets: object = None,
    step: int | None = None,
    baseline: object = "zeros",
    batch_size: int | None = None,
) -> PerturbationCurves:
    """Deletion curves and AUC (lower = more faithful); see :func:`perturbation_curves`."""
    return perturbation_curves(model, x, saliency, "deletion", targets, step, baseline, batch_size)


def insertion(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    targets: object = None,
    step: int | None = None,
    baseline: object = "blur",
    batch_size: int | None = None,
) -> PerturbationCurves:
    """Insertion curves and AUC (higher = more faithful), starting by default from the
    :func:`xgir.data.blur.gaussian_blur` of x (sigma max(H, W) / 8); see :func:`perturbation_curves`."""
    return perturbation_curves(model, x, saliency, "insertion", targets, step, baseline, batch_size)
