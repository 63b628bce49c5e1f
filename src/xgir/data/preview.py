"""``xgir data preview``: a PNG grid of a dataset's samples with masks outlined."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from xgir.data.base import ImageDataset
from xgir.viz import sample_grid


def preview(dataset: ImageDataset, path: str | os.PathLike, n: int = 32, seed: int = 0) -> Path:
    """Write ``n`` random samples (titles: label, group) with the object mask in green and
    the decoy mask (when the dataset has one) in red."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    sub = dataset.subset(idx)
    titles = []
    for i in range(len(sub)):
        t = f"y={sub.classes[int(sub.labels[i])]}"
        if "texture" in sub.extras:
            from xgir.data.textures import TEXTURE_FAMILIES

            t += f" {TEXTURE_FAMILIES[int(sub.extras['texture'][i])]}"
        titles.append(t)
    masks = {}
    if sub.masks is not None:
        masks["object"] = sub.masks
    if "decoy_mask" in sub.extras:
        masks["decoy"] = sub.extras["decoy_mask"]
    return sample_grid(sub.images, path, titles=titles, masks=masks)
