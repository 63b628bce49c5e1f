"""Characters rendered with the fonts that matplotlib ships.

An atlas of (font, character) bitmaps is rendered once with matplotlib's
FreeType binding; samples are atlas entries drawn through random affines
(size, rotation, position), some degraded to low resolution so that the set
also covers blurry, upsampled characters like the scikit-learn digits.
"""

from __future__ import annotations

import os
import string
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from xgir.data.digits import random_affines

GLYPH_CHARS = string.digits + string.ascii_uppercase  # 36 classes, digits first
_FONT_FILES = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
    "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
]  # fmt: skip
_ATLAS_SIDE = 32


def _font_dir() -> str:
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


def _render(path: str, char: str) -> np.ndarray | None:
    from matplotlib.ft2font import FT2Font

    font = FT2Font(path)
    font.set_size(48, 72)
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    ys, xs = np.nonzero(img > 0.05)
    if len(ys) < 10:
        return None
    return img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@lru_cache(maxsize=1)
def glyph_atlas() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Rendered glyphs: float[M,1,32,32] (glyph centred, longest side 32 px), char labels long[M],
    font names. Glyphs a font cannot draw (empty bitmaps) are left out."""
    bitmaps, labels, fonts = [], [], []
    folder = _font_dir()
    for file in _FONT_FILES:
        path = os.path.join(folder, file)
        if not os.path.exists(path):
            continue
        for label, char in enumerate(GLYPH_CHARS):
            img = _render(path, char)
            if img is None:
                continue
            h, w = img.shape
            side = max(h, w)
            canvas = np.zeros((side, side), dtype=np.float32)
            canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
            t = torch.from_numpy(canvas)[None, None]
            bitmaps.append(F.interpolate(t, size=(_ATLAS_SIDE,) * 2, mode="area")[0])
            labels.append(label)
            fonts.append(file.removesuffix(".ttf"))
    return torch.stack(bitmaps), torch.tensor(labels), fonts


def render_glyphs(
    n: int, size: int, generator: torch.Generator, degrade_prob: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random glyphs: ink float[n,1,size,size] in [0,1] and char labels long[n].

    Glyph height is 45-80% of the canvas, rotation within +-15 degrees, position random
    inside the canvas; with probability ``degrade_prob`` the glyph is reduced to 8-12 px
    and upsampled again (blurry strokes, like upsampled 8x8 digits).
    """
    atlas, atlas_labels, _ = glyph_atlas()
    pick = torch.randint(len(atlas), (n,), generator=generator)
    src = F.pad(atlas[pick], (4, 4, 4, 4))  # margin so warps do not clip
    height = 0.45 + 0.35 * torch.rand(n, generator=generator)  # glyph side / canvas side
    theta = random_affines(n, generator, rotation_deg=15.0, scale=(1.0, 1.0), shear=0.15, shift=0.0)
    span = height * (_ATLAS_SIDE + 8) / _ATLAS_SIDE
    theta[:, :, :2] /= span.view(n, 1, 1)
    room = (1 - height).clamp(min=0.0)
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * room.view(n, 1) / span.view(n, 1)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    degrade = torch.rand(n, generator=generator) < degrade_prob
    if degrade.any():
        low = int(torch.randint(8, 13, (1,), generator=generator))
        small = F.interpolate(ink[degrade], size=(low, low), mode="area")
        ink[degrade] = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return ink.clamp(0, 1), atlas_labels[pick]
