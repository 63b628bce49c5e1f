"""Figures (PNG, written atomically): sample grids with mask outlines, and grids of attribution
maps over their images with titles, colour bars and a layout that does not overlap.

Tensors as the library stores them: images float[N,C,H,W] in [0, 1], masks bool[N,H,W], maps
float[N,T,H,W] (any size: resized to the image).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from xgir.errors import XgirError  # noqa: E402
from xgir.io import save_figure  # noqa: E402
from xgir.viz.labels import shorten, wrap  # noqa: E402
from xgir.viz.normalize import (  # noqa: E402
    PERCENTILE,
    attribution_rgb,
    check_options,
    colormap_for,
    describe,
    sign_for,
)

PANEL = 1.7  # inches, at least: a panel grows with the image so that 120 dpi shows each pixel


def panel_size(height: int) -> float:
    """Inches of a square panel for images ``height`` pixels high (1.7 for digits, 2.24 for 224 px)."""
    return max(PANEL, min(3.0, height / 100))


def to_display(image: torch.Tensor) -> np.ndarray:
    """float[C,H,W] -> array[H,W] (grey) or [H,W,3] for imshow."""
    img = image.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def bare(ax: Any) -> None:
    """No ticks, no frame ticks: a picture panel."""
    ax.set_xticks([])
    ax.set_yticks([])


def show_image(ax: Any, image: torch.Tensor) -> None:
    """The image float[C,H,W] on ``ax`` (grey for one channel), pixels kept sharp."""
    arr = to_display(image)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    bare(ax)


def sample_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    ncols: int = 8,
) -> Path:
    """A grid of images with mask outlines (``masks``: legend name -> bool[N,H,W]); titles shortened."""
    n = images.shape[0]
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows), squeeze=False, layout="constrained")
    colours = ["lime", "red", "cyan", "yellow"]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        show_image(ax, images[i])
        for k, (_name, m) in enumerate((masks or {}).items()):
            if m[i].any():
                ax.contour(m[i].float().cpu().numpy(), levels=[0.5], colors=colours[k % 4], linewidths=0.8)
        if titles is not None:
            ax.set_title(wrap(shorten(titles[i], 40), 22, 2), fontsize=7)
    if masks:
        handles = [plt.Line2D([], [], color=colours[k % 4], label=name) for k, name in enumerate(masks)]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, path)


def _per_column(value: Any, t: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != t:
            raise XgirError(f"{what}: one value per map column ({t}), got {len(value)}")
        return list(value)
    return [value] * t


def colorbar(fig: Any, axes: Any, sign: str, floor: bool, percentile: float = PERCENTILE,
             cmap: str | None = None, prefix: str = "") -> Any:
    """A horizontal colour bar under ``axes`` for maps drawn with ``sign`` (values -1..1 or 0..1);
    ``prefix`` names the maps it is for."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo = -1.0 if sign == "all" else 0.0
    sm = ScalarMappable(Normalize(lo, 1.0), colormap_for(sign, cmap))
    width = fig.get_size_inches()[0]
    bar = fig.colorbar(sm, ax=axes, location="bottom", shrink=min(0.8, 3.2 / width), aspect=25, pad=0.01)
    label = describe(sign, percentile, floor)
    bar.set_label(wrap(f"{shorten(prefix, 60)}: {label}" if prefix else label, int(12 * min(width, 8)), 2), fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return bar


def heatmap_grid(
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    path: str | os.PathLike,
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    titles: Sequence[Sequence[str]] | None = None,
    alpha: float = 0.8,
    signed: bool | Sequence[bool] = False,
    sign: str | Sequence[str] | None = None,
    method: str = "blended_heat_map",
    percentile: float = PERCENTILE,
    floor: bool | Sequence[bool] | None = None,
    colorbars: bool = True,
    suptitle: str | None = None,
) -> Path:
    """Maps over their images: images float[N,C,H,W], heatmaps float[N,T,h,w].

    One row per image: the image, then one panel per map (``method``: see
    :func:`xgir.viz.normalize.attribution_rgb`). Each map is scaled by the ``percentile``-th
    percentile of its magnitudes and clipped (:func:`~xgir.viz.normalize.normalize_map`);
    ``signed`` (one value, or one per column, e.g. from ``explainer_info(name).signed``) draws it
    in a diverging colour map centred on 0, else in a sequential one with ``floor`` (default: on
    for sequential columns); ``sign`` (Captum's ``all``, ``positive``, ``absolute_value``,
    ``negative``; one, or one per column) overrides what ``signed`` chooses. ``titles[i][j]``
    heads map j of image i (class names and probabilities), ``col_titles`` the first row's
    columns; row titles are shortened and every title wrapped, in a constrained layout. A colour
    bar per drawing style.
    """
    if heatmaps.ndim != 4 or images.ndim != 4 or heatmaps.shape[0] != images.shape[0]:
        raise XgirError(f"heatmap_grid takes images [N,C,H,W] and maps [N,T,H,W], got {tuple(images.shape)} "
                        f"and {tuple(heatmaps.shape)}")
    n, t = heatmaps.shape[:2]
    signs = [sign_for(s, heatmaps[:, j]) for j, s in enumerate(_per_column(signed, t, "signed"))]
    if sign is not None:
        signs = _per_column(sign, t, "sign")
    floors = [f if f is not None else sg != "all" for f, sg in zip(_per_column(floor, t, "floor"), signs, strict=True)]
    for sg in signs:
        check_options(sg, method, percentile)
    side = panel_size(int(images.shape[-2]))
    fig, axes = plt.subplots(n, t + 1, figsize=(side * (t + 1), side * n + (0.5 if colorbars else 0.0)),
                             squeeze=False, layout="constrained")
    for i in range(n):
        show_image(axes[i, 0], images[i])
        if row_titles is not None:
            axes[i, 0].set_ylabel(wrap(shorten(row_titles[i], 40), 22, 2), fontsize=7)
        if i == 0 and col_titles is not None and titles is not None:
            axes[0, 0].set_title("input", fontsize=7)
        for j in range(t):
            ax = axes[i, j + 1]
            rgb = attribution_rgb(images[i], heatmaps[i, j], method=method, sign=signs[j], percentile=percentile,
                                  floor=floors[j], alpha=alpha)
            ax.imshow(rgb, interpolation="nearest")
            bare(ax)
            head = [col_titles[j]] if col_titles is not None and i == 0 else []
            head += [titles[i][j]] if titles is not None else []
            if head:
                ax.set_title(wrap("\n".join(head), int(15 * side), lines=4), fontsize=7)
    if colorbars and method in ("heat_map", "blended_heat_map"):
        styles = list(dict.fromkeys(zip(signs, floors, strict=True)))
        for style in styles:  # under the whole grid (the panels keep one size); named when several
            cols = [j for j in range(t) if (signs[j], floors[j]) == style]
            named = ", ".join(col_titles[j] for j in cols) if col_titles is not None and len(styles) > 1 else ""
            colorbar(fig, axes.ravel().tolist(), style[0], style[1], percentile, prefix=named)
    if suptitle:
        fig.suptitle(wrap(suptitle, 90, 2), fontsize=8)
    return save_figure(fig, path)


def legend_outside(ax: Any, fontsize: int = 7) -> Any:
    """The legend right of the axes (it hides no line); use with ``layout="constrained"``."""
    return ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                     frameon=False)
