"""Sanity checks: cascading model-parameter randomisation (MPRT, Adebayo et al. 2018).

Layers are re-initialised from the output down, cumulatively, and the
explanation of each randomised model is compared with the original by Spearman
rank correlation (of absolute and of signed maps) and SSIM (of min-max
normalised maps). A map that does not change while the weights are destroyed
does not explain the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.blur import gaussian_kernel
from xgir.errors import XgirError
from xgir.metrics.localisation import minmax_normalise
from xgir.progress import iterate

ExplainerFn = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]


# ---------------------------------------------------------------- similarities


def rankdata(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dimension, ties given their average rank (as
    ``scipy.stats.rankdata``). float[...,P] -> float[...,P]."""
    shape = values.shape
    v = values.reshape(-1, shape[-1])
    b, p = v.shape
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    new = torch.ones_like(sorted_v, dtype=torch.bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = torch.cumsum(new.long(), dim=1) - 1 + torch.arange(b, device=v.device)[:, None] * p
    pos = torch.arange(p, device=v.device, dtype=torch.float64).expand(b, p).reshape(-1)
    g = group.reshape(-1)
    first = torch.full((b * p,), float(p), dtype=torch.float64, device=v.device)
    last = torch.full((b * p,), -1.0, dtype=torch.float64, device=v.device)
    first.scatter_reduce_(0, g, pos, reduce="amin")
    last.scatter_reduce_(0, g, pos, reduce="amax")
    avg = ((first + last) / 2 + 1)[g].reshape(b, p)
    ranks = torch.empty_like(avg)
    ranks.scatter_(1, order, avg)
    return ranks.reshape(shape)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    num = (a * b).sum(-1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), float("nan"))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of maps a, b float[...,H,W] -> float[...] (float64 ranks).

    NaN when either map is constant (the correlation is undefined), as scipy.
    """
    _same_shape(a, b)
    ra = rankdata(a.flatten(-2).double())
    rb = rankdata(b.flatten(-2).double())
    return _pearson(ra, rb).float()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    normalise: bool = True,
) -> torch.Tensor:
    """Mean structural similarity of maps a, b float[...,H,W] -> float[...].

    Wang et al. 2004 with a Gaussian window (sigma 1.5, 11 px, K1 = 0.01, K2 = 0.03),
    averaged over the positions where the window fits inside the map; this equals
    ``skimage.metrics.structural_similarity(a, b, data_range=1, gaussian_weights=True,
    use_sample_covariance=False)``. Maps smaller than 11 px use the largest odd window that
    fits. With ``normalise`` each map is first min-max normalised to [0, 1] (a constant map
    becomes zeros).
    """
    _same_shape(a, b)
    h, w = a.shape[-2:]
    size = min(2 * int(3.5 * sigma + 0.5) + 1, h - (1 - h % 2), w - (1 - w % 2))
    if size < 1:
        raise XgirError(f"maps of size {h}x{w} are too small for SSIM")
    x = a.reshape(-1, 1, h, w).double()
    y = b.reshape(-1, 1, h, w).double()
    if normalise:
        x, y = minmax_normalise(x), minmax_normalise(y)
    k = gaussian_kernel(sigma, size // 2, x.dtype, x.device)  # size is odd

    def window_mean(z: torch.Tensor) -> torch.Tensor:  # Gaussian-weighted mean where the window fits (no padding)
        return F.conv2d(F.conv2d(z, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = window_mean(x), window_mean(y)
    vx = window_mean(x * x) - mx * mx
    vy = window_mean(y * y) - my * my
    cxy = window_mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean((-3, -2, -1)).float().reshape(a.shape[:-2])


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim < 2:
        raise XgirError(
            "maps to compare must have the same shape [...,H,W]: "
            f"{tuple(a.shape)} vs {tuple(b.shape)}"
        )
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise XgirError("maps to compare contain NaN or infinite values")


# ---------------------------------------------------------------- randomisation


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, from the output down (reversed
    ``named_modules`` registration order, which is the forward order for the zoo models)."""
    names = [
        name
        for name, mod in model.named_modules()
        if name and any(True for _ in mod.parameters(recurse=False))
    ]
    return names[::-1]


def _reinit(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameterised submodule of ``module`` with a seeded RNG:
    ``reset_parameters`` where defined (batch norm: weight 1, bias 0, fresh running
    statistics), else N(0, 0.01^2) weights."""
    devices = sorted({p.device.index for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if not own:
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                with torch.no_grad():
                    for p in own:
                        p.normal_(0.0, 0.01)


def randomised_models(
    model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Yield (layer name, model) with the named layers re-initialised cumulatively, in the
    given order (default :func:`parameter_layers`: output first).

    A deep copy of ``model`` is made once and mutated step by step; the same copy is
    yielded each time (deep-copy it to keep a step). ``model`` itself is never changed. A
    name may be a container (e.g. ``layer3``): all its parameterised submodules are reset.
    """
    names = list(parameter_layers(model) if layers is None else layers)
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules or not name]
    if unknown:
        raise XgirError(
            f"unknown layer(s) {unknown}; layers with parameters: "
            f"{', '.join(parameter_layers(model)[::-1])}"
        )
    if not names:
        raise XgirError("the model has no layers with parameters to randomise")
    work = copy.deepcopy(model)
    work_modules = dict(work.named_modules())
    for i, name in enumerate(names):
        _reinit(work_modules[name], seed * 100_003 + i)
        yield name, work


@dataclass
class RandomisationResult:
    """Similarity of each randomised step's maps to the original maps.

    Attributes:
        layers: the layer randomised at each step (cumulatively), L names.
        spearman_abs, spearman_signed, ssim: float[L,N,T].
        original: the original heatmaps float[N,T,H,W].
    """

    layers: list[str]
    spearman_abs: torch.Tensor
    spearman_signed: torch.Tensor
    ssim: torch.Tensor
    original: torch.Tensor = field(repr=False)

    def summary(self) -> list[dict[str, Any]]:
        """One row per step: mean of each similarity over maps (NaN ignored) and NaN counts."""
        rows = []
        for i, name in enumerate(self.layers):
            row: dict[str, Any] = {"layer": name}
            for key in ("spearman_abs", "spearman_signed", "ssim"):
                v = getattr(self, key)[i]
                row[key] = (
                    float(torch.nanmean(v)) if bool(torch.isfinite(v).any()) else float("nan")
                )
                row[f"{key}_nan"] = int(torch.isnan(v).sum())
            rows.append(row)
        return rows


def _maps(explainer: ExplainerFn, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
    maps = explainer(model, x, targets)
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or maps.shape[0] != x.shape[0]:
        raise XgirError(
            f"the explainer must return heatmaps [N,T,H,W]; got {getattr(maps, 'shape', maps)}"
        )
    maps = maps.detach().float()
    if not bool(torch.isfinite(maps).all()):
        raise XgirError("the explainer returned NaN or infinite heatmaps")
    return maps


def cascading_randomisation(
    model: nn.Module,
    explainer: ExplainerFn,
    x: torch.Tensor,
    targets: Any,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RandomisationResult:
    """MPRT: explain ``x`` for ``targets`` with the original model and after each cumulative
    randomisation step; compare each map with the original.

    Args:
        explainer: ``explainer(model, x, targets) -> heatmaps float[N,T,H,W]``.
        targets: kept fixed across steps (e.g. the original model's predictions).
        layers: layer names to randomise, in order (default: all with parameters, output first).
    """
    original = _maps(explainer, model, x, targets)
    sp_abs, sp_sign, ss, names = [], [], [], []
    steps = randomised_models(model, layers, seed)
    for name, rand in iterate(steps, desc="randomise", enabled=progress, unit="layer"):
        maps = _maps(explainer, rand, x, targets)
        if maps.shape != original.shape:
            raise XgirError(f"heatmap shape changed after randomising {name}: {tuple(maps.shape)}")
        names.append(name)
        sp_abs.append(spearman(original.abs(), maps.abs()))
        sp_sign.append(spearman(original, maps))
        ss.append(ssim(original, maps))
    return RandomisationResult(
        names, torch.stack(sp_abs), torch.stack(sp_sign), torch.stack(ss), original
    )
