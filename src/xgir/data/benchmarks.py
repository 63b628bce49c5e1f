"""Builders of the embedded benchmark datasets (docs/data.md, "Embedded benchmarks").

Each builder is deterministic given ``seed``: the same seed gives the same
tensors, and the splits of one seed draw from disjoint pools of base digits.
"""

from __future__ import annotations

import torch

from xgir.data.base import ImageDataset
from xgir.data.digits import base_digits, render_digits, split_pools
from xgir.data.glyphs import GLYPH_CHARS, render_glyphs
from xgir.data.textures import TEXTURE_FAMILIES, composite, render_textures
from xgir.errors import XgirError

DIGIT_CLASSES = [str(i) for i in range(10)]


def _generator(seed: int, split: str, salt: str) -> torch.Generator:
    key = sum((i + 1) * ord(c) for i, c in enumerate(f"{salt}/{split}"))
    return torch.Generator().manual_seed(seed * 1_000_003 + key)


def _check_split(split: str, allowed: tuple[str, ...], name: str) -> None:
    if split not in allowed:
        raise XgirError(f"unknown split '{split}' for {name}; choose one of: {', '.join(allowed)}")


def _draw_from_pool(pool: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n base indices from ``pool``, balanced over the pool (each used about n/len times)."""
    reps = -(-n // len(pool))
    order = torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(reps)])
    return order[:n]


# ---------------------------------------------------------------- decoy-digits
DECOY_SPLITS = ("train", "test")
DECOY_SIZES = {"train": 5000, "test": 2000}


def decoy_digits(
    split: str = "train",
    *,
    seed: int = 0,
    n: int | None = None,
    decoys: bool = True,
    patch: int = 4,
    corners: str = "one",
) -> ImageDataset:
    """decoy-digits: 28x28 grey digits with 4x4 decoy patches in the corners.

    In ``train`` the patch shade is 255 - 25 * label (in [0,1] units /255); in ``test``
    it is random. ``corners="one"`` puts one patch in a random corner (Ross et al.),
    ``"all"`` puts one in each of the four corners. ``decoys=False`` gives the same
    digits with no patches (the no-decoy reference).

    Returns masks = the digit (relevant), extras["decoy_mask"] = the patches (irrelevant).
    """
    _check_split(split, DECOY_SPLITS, "decoy-digits")
    if corners not in ("one", "all"):
        raise XgirError(f"corners must be 'one' or 'all', got '{corners}'")
    n = DECOY_SIZES[split] if n is None else n
    g = _generator(seed, split, "decoy")
    pool = split_pools({"train": 0.7, "test": 0.3}, seed)[split]
    base = _draw_from_pool(pool, n, g)
    _, base_labels = base_digits()
    labels = base_labels[base]
    size = 28
    ink = render_digits(base, size=size, digit_size=20.0, generator=g)[:, 0]
    images = ink.clone()
    decoy_mask = torch.zeros(n, size, size, dtype=torch.bool)
    if decoys:
        if split == "train":
            shade = (255.0 - 25.0 * labels.float()) / 255.0
        else:
            shade = (255.0 - 25.0 * torch.randint(0, 10, (n,), generator=g).float()) / 255.0
        starts = [(0, 0), (0, size - patch), (size - patch, 0), (size - patch, size - patch)]
        if corners == "one":
            chosen = torch.randint(0, 4, (n,), generator=g)
            which = [chosen == k for k in range(4)]
        else:
            which = [torch.ones(n, dtype=torch.bool)] * 4
        for k, (r, c) in enumerate(starts):
            sel = which[k]
            decoy_mask[sel, r : r + patch, c : c + patch] = True
        images = torch.where(decoy_mask, shade.view(n, 1, 1), images)
    masks = (ink > 0.25) & ~decoy_mask
    return ImageDataset(
        images=images.unsqueeze(1),
        labels=labels,
        masks=masks,
        extras={"decoy_mask": decoy_mask},
        classes=list(DIGIT_CLASSES),
        name=f"decoy-digits/{split}" + ("" if decoys else "/no-decoy"),
    )


# ------------------------------------------------------------ background-shift
SHIFT_SPLITS = ("source-train", "source-val", "source-test", "target-val", "target-test")
SHIFT_SIZES = {
    "source-train": 6000,
    "source-val": 1000,
    "source-test": 2000,
    "target-val": 2000,
    "target-test": 2000,
}
_SHIFT_POOLS = {
    "source-train": 0.5,
    "source-val": 0.1,
    "source-test": 0.13,
    "target-val": 0.13,
    "target-test": 0.14,
}


def background_shift(
    split: str = "source-train",
    *,
    seed: int = 0,
    n: int | None = None,
    p: float = 0.95,
    size: int = 32,
) -> ImageDataset:
    """background-shift: RGB digits on procedural textures (after Waterbirds).

    In the ``source-*`` splits the texture family equals the label's family (family =
    label) with probability ``p`` and is uniform over the other families otherwise; in
    the ``target-*`` splits it is independent of the label. Groups are (label, family):
    group = label * 10 + family. Masks are the exact digit pixels (ink > 0.5).
    extras["texture"] holds the family index.
    """
    _check_split(split, SHIFT_SPLITS, "background-shift")
    if not 0.0 <= p <= 1.0:
        raise XgirError(f"p must be in [0, 1], got {p}")
    n = SHIFT_SIZES[split] if n is None else n
    g = _generator(seed, split, f"shift{size}")
    pool = split_pools(_SHIFT_POOLS, seed)[split]
    base = _draw_from_pool(pool, n, g)
    _, base_labels = base_digits()
    labels = base_labels[base]
    n_fam = len(TEXTURE_FAMILIES)
    if split.startswith("source"):
        aligned = torch.rand(n, generator=g) < p
        other = (labels + torch.randint(1, n_fam, (n,), generator=g)) % n_fam
        families = torch.where(aligned, labels % n_fam, other)
    else:
        families = torch.randint(0, n_fam, (n,), generator=g)
    ink = render_digits(base, size=size, digit_size=size * 0.7, generator=g)
    background = render_textures(families, size, g)
    images = composite(ink, background, g)
    return ImageDataset(
        images=images,
        labels=labels,
        masks=ink[:, 0] > 0.5,
        groups=labels * n_fam + families,
        extras={"texture": families},
        classes=list(DIGIT_CLASSES),
        group_names=[f"{d}/{t}" for d in DIGIT_CLASSES for t in TEXTURE_FAMILIES],
        name=f"background-shift/{split}/p={p}",
    )


# -------------------------------------------------------------- glyph-pretrain
GLYPH_SPLITS = ("train", "val")
GLYPH_SIZES = {"train": 20000, "val": 2000}


def glyph_pretrain(split: str = "train", *, seed: int = 0, n: int | None = None, size: int = 32) -> ImageDataset:
    """glyph-pretrain: font characters (digits and capitals, 36 classes) on textures drawn
    independently of the character. labels = character; extras["texture"] = family.
    Masks are the glyph pixels (ink > 0.5)."""
    _check_split(split, GLYPH_SPLITS, "glyph-pretrain")
    n = GLYPH_SIZES[split] if n is None else n
    g = _generator(seed, split, f"glyph{size}")
    ink, labels = render_glyphs(n, size, g)
    families = torch.randint(0, len(TEXTURE_FAMILIES), (n,), generator=g)
    images = composite(ink, render_textures(families, size, g), g)
    return ImageDataset(
        images=images,
        labels=labels,
        masks=ink[:, 0] > 0.5,
        extras={"texture": families},
        classes=list(GLYPH_CHARS),
        name=f"glyph-pretrain/{split}",
    )
