"""Pictures: sample grids with mask outlines, heatmap overlays and grids.

All functions take tensors as the library stores them (images float[N,C,H,W] in
[0,1], masks bool[N,H,W], heatmaps float[N,H,W]) and write PNGs atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from xgir.io import save_figure  # noqa: E402


def to_display(image: torch.Tensor) -> np.ndarray:
    """float[C,H,W] -> array[H,W] (grey) or [H,W,3] for imshow."""
    img = image.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def _show(ax: plt.Axes, image: torch.Tensor) -> None:
    arr = to_display(image)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def sample_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    ncols: int = 8,
) -> Path:
    """A grid of images with mask outlines (``masks``: legend name -> bool[N,H,W])."""
    n = images.shape[0]
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows), squeeze=False)
    colours = ["lime", "red", "cyan", "yellow"]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, images[i])
        for k, (_name, m) in enumerate((masks or {}).items()):
            if m[i].any():
                ax.contour(m[i].float().cpu().numpy(), levels=[0.5], colors=colours[k % 4], linewidths=0.8)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if masks:
        handles = [plt.Line2D([], [], color=colours[k % 4], label=name) for k, name in enumerate(masks)]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, path)


def heatmap_grid(
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    path: str | os.PathLike,
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    signed: bool = False,
) -> Path:
    """Overlays of heatmaps on their images: images float[N,C,H,W], heatmaps float[N,T,H,W].

    One row per image: the image, then one overlay per target. Each map is scaled by
    its own max |value| (``signed`` uses a diverging colour map centred at zero).
    """
    n, t = heatmaps.shape[:2]
    fig, axes = plt.subplots(n, t + 1, figsize=(1.7 * (t + 1), 1.7 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i])
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
        for j in range(t):
            ax = axes[i, j + 1]
            _show(ax, images[i])
            h = heatmaps[i, j].detach().float().cpu()
            if h.shape != images.shape[-2:]:
                h = torch.nn.functional.interpolate(h[None, None], size=images.shape[-2:], mode="bilinear")[0, 0]
            scale = float(h.abs().max()) or 1.0
            if signed:
                ax.imshow(h.numpy() / scale, cmap="bwr", vmin=-1, vmax=1, alpha=alpha)
            else:
                ax.imshow(h.clamp(min=0).numpy() / scale, cmap="jet", vmin=0, vmax=1, alpha=alpha)
            if col_titles is not None and i == 0:
                ax.set_title(col_titles[j], fontsize=7)
    return save_figure(fig, path)
