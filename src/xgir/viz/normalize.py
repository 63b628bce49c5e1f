"""Attribution maps to colours, as Captum's ``visualize_image_attr`` does it, without a figure.

A map float[H,W] is reduced to the part its ``sign`` asks for (Captum's names: ``all``,
``positive``, ``absolute_value``, ``negative``), divided by a clipping threshold (default the 99th
percentile of that part's magnitudes; ``clip="mass"`` uses Captum's cumulative-mass threshold) and
clipped: ``all`` maps land in [-1, 1] and are drawn in a diverging colour map centred on 0, the
others in [0, 1] and a sequential colour map. ``floor=True`` (sequential signs only) also
subtracts the lower percentile, for maps that sit on an offset (RISE's scores span e.g.
0.107-0.126: scaled from 0 they colour the whole image alike).

:func:`attribution_rgb` draws one map the way a ``method`` says (``heat_map``,
``blended_heat_map``, ``original_image``, ``masked_image``, ``alpha_scaling``) as uint8[H,W,3];
figures (:mod:`xgir.viz.figures`) and the app's PNGs both use it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from xgir.errors import XgirError

Sign = Literal["all", "positive", "absolute_value", "negative"]
Method = Literal["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"]
SIGNS: tuple[str, ...] = ("all", "positive", "absolute_value", "negative")
METHODS: tuple[str, ...] = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
DIVERGING = "RdBu_r"  # blue < 0 < red, white at 0
SEQUENTIAL = "inferno"  # black (0) -> yellow (1)
PERCENTILE = 99.0


def as_array(a: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor or array as a float64 numpy array."""
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(a, dtype=np.float64)


def check_options(sign: str, method: str = "heat_map", percentile: float = PERCENTILE, clip: str = "value") -> None:
    """XgirError (one line) on an unknown sign, method or clip, or a percentile outside (0, 100]."""
    if sign not in SIGNS:
        raise XgirError(f"sign must be one of {', '.join(SIGNS)}, got '{sign}'")
    if method not in METHODS:
        raise XgirError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    if clip not in ("value", "mass"):
        raise XgirError(f"clip must be value or mass, got '{clip}'")
    if not 0.0 < float(percentile) <= 100.0:
        raise XgirError(f"percentile must be in (0, 100], got {percentile}")
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        raise XgirError(f"{method} cannot show both signs; use sign positive, absolute_value or negative")


def sign_part(attr: np.ndarray, sign: str) -> np.ndarray:
    """The part of ``attr`` that ``sign`` shows (Captum's rule): all of it, max(A, 0), min(A, 0) or |A|."""
    if sign == "positive":
        return np.maximum(attr, 0)
    if sign == "negative":
        return np.minimum(attr, 0)
    if sign == "absolute_value":
        return np.abs(attr)
    return attr


def threshold(values: np.ndarray, percentile: float = PERCENTILE, clip: str = "value") -> float:
    """Clipping threshold of non-negative ``values``: their ``percentile``-th percentile
    (``clip="value"``), or Captum's cumulative-sum threshold (``clip="mass"``: the smallest value
    at which the sorted values hold ``percentile`` % of the total). Falls back to the maximum
    when that is 0 (a sparse map); 0 only for an all-zero map."""
    flat = np.sort(values.ravel())
    if flat.size == 0:
        return 0.0
    if clip == "mass":
        sums = np.cumsum(flat)
        t = float(flat[np.where(sums >= sums[-1] * 0.01 * percentile)[0][0]]) if sums[-1] > 0 else 0.0
    else:
        t = float(np.percentile(flat, percentile))
    return t if t > 0 else float(flat[-1])


def normalize_map(attr: torch.Tensor | np.ndarray, sign: str = "all", percentile: float = PERCENTILE, *,
                  clip: str = "value", floor: bool = False) -> np.ndarray:
    """Map float[H,W] -> float[H,W] in [-1, 1] (``sign="all"``) or [0, 1] (the other signs).

    ``sign`` picks the part shown (:func:`sign_part`), :func:`threshold` of its magnitudes
    scales it and values beyond are clipped; a ``negative`` map comes out non-negative (as in
    Captum). ``floor`` (not for ``all``): (part - lo) / (t - lo) with lo the (100 - percentile)-th
    percentile, for maps on an offset (a map constant up to float rounding is drawn as without it:
    a support covering the whole image stays visible). An all-zero map gives zeros.
    """
    check_options(sign, percentile=percentile, clip=clip)
    a = as_array(attr)
    if a.ndim != 2:
        raise XgirError(f"a map to draw is float[H,W], got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    part = sign_part(a, sign)
    mag = np.abs(part)
    if floor and sign != "all":
        lo = float(np.percentile(mag, 100.0 - percentile)) if percentile < 100 else float(mag.min())
        hi = threshold(mag, percentile, clip)
        if hi - lo > 1e-6 * max(abs(hi), abs(lo)):  # else constant up to rounding: drawn as without floor
            return np.clip((mag - lo) / (hi - lo), 0.0, 1.0)
    t = threshold(mag, percentile, clip)
    if t == 0:
        return np.zeros_like(a)
    scaled = part / (-t if sign == "negative" else t)
    return np.clip(scaled, -1.0, 1.0)


def sign_for(signed: bool, maps: torch.Tensor | np.ndarray | None = None) -> str:
    """The sign to draw an explainer's maps with: ``all`` for a signed explainer (the registry's
    ``ExplainerInfo.signed``) or for maps that hold negative values anyway (``relu=False``,
    ``abs=False``...), else ``positive``."""
    if signed:
        return "all"
    if maps is not None and float(as_array(maps).min(initial=0.0)) < 0:
        return "all"
    return "positive"


def colormap_for(sign: str, cmap: str | None = None) -> str:
    """``cmap`` if given, else the diverging map for ``all`` and the sequential one otherwise."""
    return cmap or (DIVERGING if sign == "all" else SEQUENTIAL)


def image_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image float[C,H,W] (C = 1 or 3), [H,W] or [H,W,C] in [0, 1] -> float[H,W,3] in [0, 1]."""
    a = as_array(image)
    if a.ndim == 3 and a.shape[0] in (1, 3):  # the library's [C,H,W]
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a[..., :3], 0.0, 1.0)


def colorize(norm: np.ndarray, sign: str, cmap: str | None = None) -> np.ndarray:
    """A normalised map (:func:`normalize_map`) -> float[H,W,3] in the sign's colour map."""
    from matplotlib import colormaps

    x = (norm + 1.0) / 2.0 if sign == "all" else norm
    return np.asarray(colormaps[colormap_for(sign, cmap)](np.clip(x, 0.0, 1.0))[..., :3], dtype=np.float64)


def fit_map(attr: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map resized (bilinear) to height x width."""
    if attr.shape == (height, width):
        return attr
    t = torch.as_tensor(attr, dtype=torch.float32)[None, None]
    return torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def attribution_rgb(image: torch.Tensor | np.ndarray | None, attr: torch.Tensor | np.ndarray, *,
                    method: str = "blended_heat_map", sign: str = "all", percentile: float = PERCENTILE,
                    clip: str = "value", floor: bool = False, alpha: float = 0.8, cmap: str | None = None,
                    norm: np.ndarray | None = None) -> np.ndarray:
    """One map drawn as uint8[H,W,3] (the image's size; the map is resized to it).

    Methods (Captum's names): ``heat_map`` the map alone in its colour map; ``blended_heat_map``
    the coloured map over the image in grey (as Captum draws it), each pixel's opacity
    ``alpha * sqrt(|value|)``: the image shows where the map is near 0 (a uniform opacity tints
    the whole image with the colour of 0) and weak evidence stays visible; ``original_image`` the
    image; ``masked_image`` the image times the map; ``alpha_scaling`` the image over white with
    opacity the map. ``norm`` (a map already normalised) skips :func:`normalize_map`.
    """
    check_options(sign, method, percentile, clip)
    if not 0.0 <= alpha <= 1.0:
        raise XgirError(f"alpha must be in [0, 1], got {alpha}")
    a = as_array(attr)
    if image is None:
        if method != "heat_map":
            raise XgirError(f"{method} needs the image")
        base = None
        h, w = a.shape[-2:]
    else:
        base = image_rgb(image)
        h, w = base.shape[:2]
    n = norm if norm is not None else normalize_map(a, sign, percentile, clip=clip, floor=floor)
    n = fit_map(n, h, w)
    if base is None:  # heat_map alone
        return (np.clip(colorize(n, sign, cmap), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if method == "original_image":
        out = base
    elif method == "heat_map":
        out = colorize(n, sign, cmap)
    elif method == "masked_image":
        out = base * np.abs(n)[..., None]
    elif method == "alpha_scaling":
        out = base * np.abs(n)[..., None] + (1.0 - np.abs(n)[..., None])
    else:
        grey = np.repeat(base.mean(axis=-1, keepdims=True), 3, axis=-1)
        weight = alpha * np.sqrt(np.abs(n))[..., None]
        out = (1.0 - weight) * grey + weight * colorize(n, sign, cmap)
    return (np.clip(out, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def describe(sign: str, percentile: float = PERCENTILE, floor: bool = False, clip: str = "value") -> str:
    """What a colour bar's values mean, in a few words (pN: the N-th percentile, per map).

    >>> describe("all"), describe("positive", floor=True)
    ('A / p99 of |A| (per map)', 'max(A, 0) from its p1 to p99 (per map)')
    """
    what = {"all": "A", "positive": "max(A, 0)", "negative": "-min(A, 0)", "absolute_value": "|A|"}[sign]
    t = f"p{percentile:g}" if clip == "value" else f"{percentile:g}% of the mass"
    if floor and sign != "all":
        return f"{what} from its p{100 - percentile:g} to {t} (per map)"
    return f"{what} / {t} of {'|A|' if sign == 'all' else 'itself'} (per map)"


def kwargs_for(signed: bool, maps: Any = None) -> dict[str, Any]:
    """Drawing options for an explainer's maps: sign ``all`` (diverging) for signed maps, else
    ``positive`` with ``floor`` (sequential, robust min-max: offsets such as RISE's vanish)."""
    sign = sign_for(signed, maps)
    return {"sign": sign, "floor": sign != "all"}
