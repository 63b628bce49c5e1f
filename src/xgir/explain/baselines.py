"""Baselines (references) for attribution methods: IG, DeepLIFT, Occlusion, Expected Gradients.

A baseline is any callable ``baseline(x float[N,C,H,W], targets: Targets) -> float[N,T,C,H,W]``
(:class:`Baseline`): one reference per (image, target), so a class-targeted baseline
(GANMEX: G(x, t), "why this class and not t") plugs in next to the target-free ones here:

- ``"zero"``: black image;
- ``"mean"``: the image's own mean colour (per channel) everywhere;
- ``"blur"``: the image blurred by a Gaussian (sigma in pixels, default max(H, W) / 8);
- ``"uniform"``: uniform noise in [low, high], seeded, generated on the images' device.

:func:`get_baseline` also accepts a float (constant image) or a tensor [C,H,W], [N,C,H,W]
or [N,T,C,H,W].
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from xgir.errors import XgirError
from xgir.explain.targets import Targets


@runtime_checkable
class Baseline(Protocol):
    """``baseline(x float[N,C,H,W], targets) -> float[N,T,C,H,W]`` on x's device."""

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor: ...


def _per_target(ref: torch.Tensor, targets: Targets) -> torch.Tensor:
    """[N,C,H,W] -> [N,T,C,H,W] (a view; the same reference for every target)."""
    t = targets.shape[1]
    return ref[:, None].expand(ref.shape[0], t, *ref.shape[1:])


class ZeroBaseline:
    """All zeros (a black image)."""

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        return _per_target(torch.zeros_like(x), targets)


class ConstantBaseline:
    """A fixed reference: a float, or a tensor [C,H,W], [N,C,H,W] or [N,T,C,H,W]."""

    def __init__(self, value: float | torch.Tensor) -> None:
        self.value = value

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        n, t = targets.shape
        v = self.value
        if not isinstance(v, torch.Tensor):
            return _per_target(torch.full_like(x, float(v)), targets)
        v = v.to(device=x.device, dtype=x.dtype)
        if v.shape == x.shape[1:]:
            return v[None, None].expand(n, t, *x.shape[1:])
        if v.shape == x.shape:
            return _per_target(v, targets)
        if v.shape == (n, t, *x.shape[1:]):
            return v
        raise XgirError(
            f"a baseline tensor must be [C,H,W], [N,C,H,W] or [N,T,C,H,W] matching images "
            f"{tuple(x.shape)} and {t} targets; got {tuple(v.shape)}"
        )


class MeanColourBaseline:
    """Every pixel set to the image's mean colour (or to a given colour float[C])."""

    def __init__(self, colour: torch.Tensor | None = None) -> None:
        self.colour = colour

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        if self.colour is None:
            colour = x.mean(dim=(-2, -1), keepdim=True)
        else:
            colour = torch.as_tensor(self.colour, dtype=x.dtype, device=x.device)
            if colour.shape != (x.shape[1],):
                raise XgirError(
                    f"a mean colour needs {x.shape[1]} values, got {tuple(colour.shape)}"
                )
            colour = colour[None, :, None, None]
        return _per_target(colour.expand_as(x).contiguous(), targets)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float[N,C,H,W] (sigma in pixels, replicate padding)."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (r / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class BlurBaseline:
    """The image blurred by a Gaussian of ``sigma`` pixels (default max(H, W) / 8)."""

    def __init__(self, sigma: float | None = None) -> None:
        self.sigma = sigma

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        sigma = self.sigma if self.sigma is not None else max(x.shape[-2:]) / 8
        return _per_target(gaussian_blur(x, float(sigma)), targets)


class UniformNoiseBaseline:
    """Uniform noise in [low, high], seeded, drawn on the images' device (same for all targets)."""

    def __init__(self, low: float = 0.0, high: float = 1.0, seed: int = 0) -> None:
        if high < low:
            raise XgirError(f"uniform baseline needs low <= high, got {low} > {high}")
        self.low, self.high, self.seed = low, high, seed

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return _per_target(self.low + (self.high - self.low) * noise, targets)


BASELINES: dict[str, type] = {
    "zero": ZeroBaseline,
    "mean": MeanColourBaseline,
    "blur": BlurBaseline,
    "uniform": UniformNoiseBaseline,
}


def get_baseline(spec: Any = "zero", **params: Any) -> Baseline:
    """A :class:`Baseline` from a name (``zero``, ``mean``, ``blur``, ``uniform``; ``params`` go
    to its constructor), a float, a tensor, or a Baseline callable (returned as is)."""
    if isinstance(spec, str):
        if spec not in BASELINES:
            raise XgirError(f"unknown baseline '{spec}'; choose one of: {', '.join(BASELINES)}")
        try:
            return BASELINES[spec](**params)
        except TypeError as err:
            raise XgirError(f"bad parameters for baseline '{spec}': {err}") from None
    if isinstance(spec, (int, float, torch.Tensor)) and not isinstance(spec, bool):
        return ConstantBaseline(spec)
    if callable(spec):
        return spec
    raise XgirError(
        f"cannot use {spec!r} as a baseline: give a name, a number, a tensor or a callable"
    )


def resolve_baseline(spec: Any, x: torch.Tensor, targets: Targets) -> torch.Tensor:
    """The references float[N,T,C,H,W] of ``spec`` (see :func:`get_baseline`) for ``x``, checked."""
    ref = get_baseline(spec)(x, targets)
    n, t = targets.shape
    if not isinstance(ref, torch.Tensor) or tuple(ref.shape) != (n, t, *x.shape[1:]):
        shape = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
        raise XgirError(f"the baseline must give [N,T,C,H,W] = {(n, t, *x.shape[1:])}, got {shape}")
    if not bool(torch.isfinite(ref).all()):
        raise XgirError("the baseline contains NaN or infinite values")
    return ref.to(device=x.device, dtype=x.dtype)
