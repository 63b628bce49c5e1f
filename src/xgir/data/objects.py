"""object-shift: font digits rendered at an ImageNet network's working resolution over the
procedural textures, with exact (binary alpha) foreground masks.

The setting of the XGIR note on a frozen ImageNet extractor: the object (a digit, 10
classes) dominates the picture, the background (one of 10 texture families) is a partial
shortcut. Digits are drawn from the glyph atlas (16 matplotlib fonts), 55-80 % of the
canvas high, rotated within +-15 degrees, never blurred, and composited with a *binary*
alpha (ink > 0.5) in a bright random colour: a pixel is either object or background, so
the mask holds no background colour and ``x * mask + x0 * (1 - mask)`` is a clean core.

In ``source-*`` splits the family equals the label with probability ``p`` (uniform over
the other families otherwise); in ``target-*`` splits it is independent. Groups are
(label, family): group = label * 10 + family; extras["texture"] = family.

:func:`object_pool` renders a source pool once with a fixed number of aligned and of
misaligned images, and :func:`bias_subset` draws a source set of any bias p from it, so a
sweep over p reuses one feature pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xgir.data.base import ImageDataset
from xgir.data.digits import random_affines
from xgir.data.glyphs import glyph_atlas
from xgir.data.textures import TEXTURE_FAMILIES, render_textures
from xgir.errors import XgirError

OBJECT_SPLITS = ("source-train", "source-val", "source-test", "target-val", "target-test")
OBJECT_SIZES = {"source-train": 3000, "source-val": 600, "source-test": 1000, "target-val": 2500,
                "target-test": 1500}
DIGITS = [str(i) for i in range(10)]
_SIDE = 32  # atlas side


def _generator(seed: int, salt: str) -> torch.Generator:
    key = sum((i + 1) * ord(c) for i, c in enumerate(salt))
    return torch.Generator().manual_seed(seed * 1_000_003 + key)


def render_digit_ink(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Binary ink float[N,1,size,size] in {0, 1} of font digits ``labels`` long[N] (0-9):
    atlas glyphs of that digit (random font), 55-80 % of the canvas, random place and rotation."""
    atlas, atlas_labels, _ = glyph_atlas()
    n = len(labels)
    pick = torch.empty(n, dtype=torch.long)
    for d in range(10):
        idx = torch.nonzero(labels == d).flatten()
        if len(idx):
            pool = torch.nonzero(atlas_labels == d).flatten()
            pick[idx] = pool[torch.randint(len(pool), (len(idx),), generator=generator)]
    src = F.pad(atlas[pick], (4, 4, 4, 4))
    height = 0.55 + 0.25 * torch.rand(n, generator=generator)
    theta = random_affines(n, generator, rotation_deg=15.0, scale=(1.0, 1.0), shear=0.1, shift=0.0)
    span = height * (_SIDE + 8) / _SIDE
    theta[:, :, :2] /= span.view(n, 1, 1)
    room = (1 - height).clamp(min=0.0)
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * room.view(n, 1) / span.view(n, 1)
    src_big = F.interpolate(src, size=(4 * (_SIDE + 8),) * 2, mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(src_big, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (ink > 0.5).float()


def render_objects(labels: torch.Tensor, families: torch.Tensor, size: int, generator: torch.Generator,
                   name: str) -> ImageDataset:
    """Digits ``labels`` over textures ``families`` (both long[N]) at ``size`` px; binary alpha."""
    labels, families = torch.as_tensor(labels).long(), torch.as_tensor(families).long()
    n_fam = len(TEXTURE_FAMILIES)
    ink = render_digit_ink(labels, size, generator)
    background = render_textures(families, size, generator)
    colour = 0.8 + 0.2 * torch.rand(len(labels), 3, 1, 1, generator=generator)
    images = background * (1 - ink) + colour * ink
    return ImageDataset(
        images=images, labels=labels, masks=ink[:, 0] > 0.5, groups=labels * n_fam + families,
        extras={"texture": families}, classes=list(DIGITS),
        group_names=[f"{d}/{t}" for d in DIGITS for t in TEXTURE_FAMILIES], name=name,
    )


def _families(labels: torch.Tensor, aligned: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n_fam = len(TEXTURE_FAMILIES)
    other = (labels + torch.randint(1, n_fam, (len(labels),), generator=g)) % n_fam
    return torch.where(aligned, labels % n_fam, other)


def object_shift(split: str = "source-train", seed: int = 0, n: int | None = None, p: float = 0.9,
                 size: int = 128) -> ImageDataset:
    """One split of object-shift (see the module docstring): images float[N,3,size,size]."""
    if split not in OBJECT_SPLITS:
        raise XgirError(f"unknown split '{split}' for object-shift; choose one of: {', '.join(OBJECT_SPLITS)}")
    if not 0.0 <= p <= 1.0:
        raise XgirError(f"p must be in [0, 1], got {p}")
    n = OBJECT_SIZES[split] if n is None else n
    g = _generator(seed, f"objects{size}/{split}")
    labels = torch.randint(0, 10, (n,), generator=g)
    if split.startswith("source"):
        families = _families(labels, torch.rand(n, generator=g) < p, g)
    else:
        families = torch.randint(0, len(TEXTURE_FAMILIES), (n,), generator=g)
    return render_objects(labels, families, size, g, f"object-shift/{split}/p={p}")


def object_pool(seed: int = 0, n_aligned: int = 2400, n_misaligned: int = 800, size: int = 128,
                part: str = "train") -> ImageDataset:
    """A source pool: ``n_aligned`` images whose family equals the label, then ``n_misaligned``
    whose family differs (uniform over the others). extras["aligned"] marks the first kind;
    ``part`` (train / val / test) names disjoint draws."""
    g = _generator(seed, f"objects{size}/pool/{part}")
    n = n_aligned + n_misaligned
    labels = torch.randint(0, 10, (n,), generator=g)
    aligned = torch.arange(n) < n_aligned
    ds = render_objects(labels, _families(labels, aligned, g), size, g, "object-shift/source-pool")
    ds.extras["aligned"] = aligned
    return ds


def bias_subset(aligned: torch.Tensor, p: float, n: int, seed: int) -> torch.Tensor:
    """Indices long[n] into a pool (``aligned`` bool[M]) with round(p n) aligned images and the
    rest misaligned, drawn at random (seeded)."""
    if not 0.0 <= p <= 1.0:
        raise XgirError(f"p must be in [0, 1], got {p}")
    k = int(round(p * n))
    a, m = torch.nonzero(aligned).flatten(), torch.nonzero(~aligned).flatten()
    if k > len(a) or n - k > len(m):
        raise XgirError(f"the pool has {len(a)} aligned and {len(m)} misaligned images; p={p}, n={n} needs "
                        f"{k} and {n - k}: render a larger pool")
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([a[torch.randperm(len(a), generator=g)[:k]], m[torch.randperm(len(m), generator=g)[: n - k]]])
    return idx[torch.randperm(n, generator=g)]
