"""Baselines (references) for attribution methods: IG, DeepLIFT, Occlusion, Expected Gradients.

A baseline is any callable ``baseline(x float[N,C,H,W], targets: Targets) -> float[N,T,C,H,W]``
(:class:`Baseline`): one reference per (image, target), so a class-targeted baseline
(GANMEX: G(x, t), "why this class and not t") plugs in next to the target-free ones here:

- ``"zeros"``: black image (``"zero"`` is accepted as the same name);
- ``"mean"``: the image's own mean colour (per channel) everywhere;
- ``"blur"``: the image blurred by :func:`xgir.data.blur.gaussian_blur` (sigma in pixels,
  default max(H, W) / 8; the same blur as XGIR's x0 and the start of insertion);
- ``"uniform"``: uniform noise in [low, high], seeded, generated on the images' device.

These names are xgir's one baseline vocabulary: ``xgir.metrics.faithfulness`` (deletion /
insertion references) and XGIR's empty image (``xgir.correct.xgir``, which adds
``"data-mean"``: the mean image of a dataset) use the same words for the same images.

:func:`get_baseline` also accepts a float (constant image) or a tensor [C,H,W], [N,C,H,W]
or [N,T,C,H,W].
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from xgir.data.blur import gaussian_blur
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

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The reference float[N,C,H,W] of images x float[N,C,H,W] (target-free)."""
        return torch.zeros_like(x)

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        return _per_target(self.image(x), targets)


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

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The reference float[N,C,H,W] of images x float[N,C,H,W] (target-free)."""
        if self.colour is None:
            colour = x.mean(dim=(-2, -1), keepdim=True)
        else:
            colour = torch.as_tensor(self.colour, dtype=x.dtype, device=x.device)
            if colour.shape != (x.shape[1],):
                raise XgirError(
                    f"a mean colour needs {x.shape[1]} values, got {tuple(colour.shape)}"
                )
            colour = colour[None, :, None, None]
        return colour.expand_as(x).contiguous()

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        return _per_target(self.image(x), targets)


class BlurBaseline:
    """The image blurred by a Gaussian of ``sigma`` pixels (default max(H, W) / 8):
    :func:`xgir.data.blur.gaussian_blur`."""

    def __init__(self, sigma: float | None = None) -> None:
        self.sigma = sigma

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The reference float[N,C,H,W] of images x float[N,C,H,W] (target-free)."""
        return gaussian_blur(x, self.sigma)

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        return _per_target(self.image(x), targets)


class UniformNoiseBaseline:
    """Uniform noise in [low, high], seeded, drawn on the images' device (same for all targets)."""

    def __init__(self, *, low: float = 0.0, high: float = 1.0, seed: int = 0) -> None:
        if high < low:
            raise XgirError(f"uniform baseline needs low <= high, got {low} > {high}")
        self.low, self.high, self.seed = low, high, seed

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The reference float[N,C,H,W] of images x float[N,C,H,W] (target-free)."""
        g = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return self.low + (self.high - self.low) * noise

    def __call__(self, x: torch.Tensor, targets: Targets) -> torch.Tensor:
        return _per_target(self.image(x), targets)


BASELINES: dict[str, type] = {
    "zeros": ZeroBaseline,
    "mean": MeanColourBaseline,
    "blur": BlurBaseline,
    "uniform": UniformNoiseBaseline,
}
ALIASES = {"zero": "zeros"}  # other spellings accepted for the same baseline


def baseline_name(name: str) -> str:
    """The canonical baseline name of ``name`` (``"zero"`` -> ``"zeros"``); XgirError if unknown."""
    name = ALIASES.get(name, name)
    if name not in BASELINES:
        raise XgirError(f"unknown baseline '{name}'; choose one of: {', '.join(BASELINES)}")
    return name


def reference_image(name: str, x: torch.Tensor) -> torch.Tensor:
    """The target-free reference float[N,C,H,W] of a named baseline (default parameters) for
    images x float[N,C,H,W], e.g. ``reference_image("blur", x)``."""
    return BASELINES[baseline_name(name)]().image(x)


def get_baseline(spec: Any = "zeros", **params: Any) -> Baseline:
    """A :class:`Baseline` from a name (``zeros`` (or ``zero``), ``mean``, ``blur``, ``uniform``;
    ``params`` go to its constructor), a float, a tensor, or a Baseline callable (returned as is).
    The named baselines also have ``.image(x) -> float[N,C,H,W]``, their target-free reference."""
    if isinstance(spec, str):
        spec = baseline_name(spec)
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
