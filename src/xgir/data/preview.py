"""``xgir data preview``: a PNG grid of a dataset's samples with masks outlined."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.viz import sample_grid

MAX_PREVIEW = 256
"""Most images one preview grid draws."""


def _titles(sub: ImageDataset) -> list[str]:
    titles = []
    for i in range(len(sub)):
        label = int(sub.labels[i])
        if label < 0 or label >= len(sub.classes):
            t = Path(sub.files[i]).name if sub.files else f"#{i}"
        else:
            t = f"y={sub.classes[label]}"
        if "texture" in sub.extras:
            from xgir.data.textures import TEXTURE_FAMILIES

            t += f" {TEXTURE_FAMILIES[int(sub.extras['texture'][i])]}"
        titles.append(t)
    return titles


def preview(dataset: ImageDataset, path: str | os.PathLike, n: int = 32, seed: int | None = 0) -> Path:
    """Write ``n`` samples (random ones drawn with ``seed``; ``seed=None``: the first ``n``;
    titles: label or file name) with the object mask in green and the decoy mask (when the
    dataset has one) in red."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PREVIEW:
        raise XgirError(f"a preview shows 1 to {MAX_PREVIEW} images, got n={n}")
    if seed is None:
        idx = torch.arange(min(n, len(dataset)))
    else:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    sub = dataset.subset(idx)
    masks = {}
    if sub.masks is not None:
        masks["object"] = sub.masks
    if "decoy_mask" in sub.extras:
        masks["decoy"] = sub.extras["decoy_mask"]
    return sample_grid(sub.images, path, titles=_titles(sub), masks=masks)
