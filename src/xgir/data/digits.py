"""Handwritten digits from scikit-learn (8x8, 1797 images), upsampled with random affines.

The 1797 base images are split into disjoint pools per split, so that no base
image appears in two splits; every sample is the base image drawn through its
own random affine (rotation, scale, shear, shift), so train and test images
differ even within a pool.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F


@lru_cache(maxsize=1)
def base_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The scikit-learn digits: images float[1797,8,8] in [0,1], labels long[1797]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    return images, labels


def split_pools(fractions: dict[str, float], seed: int) -> dict[str, torch.Tensor]:
    """Disjoint index pools into the base digits, stratified by label.

    Args:
        fractions: split name -> share of the base images (sum <= 1).
        seed: seed of the permutation.
    Returns:
        split name -> long tensor of base indices.
    """
    _, labels = base_digits()
    g = torch.Generator().manual_seed(10_000 + seed)
    pools: dict[str, list[torch.Tensor]] = {name: [] for name in fractions}
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for name, frac in fractions.items():
            count = int(round(frac * len(idx)))
            pools[name].append(idx[start : start + count])
            start += count
    return {name: torch.cat(parts) for name, parts in pools.items()}


def random_affines(
    n: int,
    generator: torch.Generator,
    rotation_deg: float = 12.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 0.1,
    shift: float = 0.08,
) -> torch.Tensor:
    """Random affine matrices float[n,2,3] in the normalised coordinates of ``affine_grid``.

    ``shift`` is a fraction of the half-width of the output image.
    """
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation_deg)
    s = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    sh = (torch.rand(n, generator=generator) * 2 - 1) * shear
    t = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> source mapping: inverse scale, rotation and shear
    a = torch.stack([cos, -sin + sh, sin, cos], dim=1).view(n, 2, 2) / s.view(n, 1, 1)
    return torch.cat([a, t.view(n, 2, 1)], dim=2)


def render_digits(
    base_index: torch.Tensor,
    size: int,
    digit_size: float,
    generator: torch.Generator,
    **affine_kwargs: Any,
) -> torch.Tensor:
    """Draw base digits into ``size`` x ``size`` canvases through random affines.

    Args:
        base_index: long[N] indices into :func:`base_digits`.
        size: output side in pixels.
        digit_size: side of the (unrotated, unscaled) 8x8 digit in output pixels.
        generator: random source of the affines.
    Returns:
        float[N,1,size,size] ink intensity in [0, 1].
    """
    images, _ = base_digits()
    src = F.pad(images[base_index], (1, 1, 1, 1)).unsqueeze(1)  # [N,1,10,10], zero border
    n = src.shape[0]
    theta = random_affines(n, generator, **affine_kwargs)
    # the 10x10 padded source spans 10/8 of the digit side
    theta[:, :, :2] *= size / (digit_size * 10 / 8)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    out = F.grid_sample(src, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    return out.clamp(0.0, 1.0)
