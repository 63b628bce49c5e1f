"""Procedural RGB textures in ten visually distinct families.

Each family has its own pattern and hue; every sample has a random phase,
frequency jitter and colour jitter, so no two backgrounds are equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TEXTURE_FAMILIES = [
    "h-stripes",
    "v-stripes",
    "diagonal",
    "checker",
    "dots",
    "rings",
    "blobs",
    "grain",
    "plaid",
    "waves",
]


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h, s, v float[N] in [0,1] -> rgb float[N,3]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _pattern(family: int, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Pattern intensities float[n,size,size] in [0,1] for one family."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy[None], xx[None]
    freq = (4.0 + 1.5 * torch.rand(n, 1, 1, generator=g)) * 2 * math.pi
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    name = TEXTURE_FAMILIES[family]
    if name == "h-stripes":
        p = torch.sin(freq * yy + phase)
    elif name == "v-stripes":
        p = torch.sin(freq * xx + phase)
    elif name == "diagonal":
        p = torch.sin(freq * (xx + yy) / math.sqrt(2) + phase)
    elif name == "checker":
        p = torch.sign(torch.sin(freq * 0.6 * xx + phase) * torch.sin(freq * 0.6 * yy + phase * 1.7))
    elif name == "dots":
        gx = torch.sin(freq * 0.9 * xx + phase)
        gy = torch.sin(freq * 0.9 * yy + phase * 0.5)
        p = ((gx > 0.5) & (gy > 0.5)).float() * 2 - 1
    elif name == "rings":
        c = torch.rand(n, 2, 1, 1, generator=g)
        r = torch.sqrt((xx - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2)
        p = torch.sin(freq * 1.2 * r + phase)
    elif name == "blobs":
        low = torch.rand(n, 1, 4, 4, generator=g)
        p = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        p = (p - 0.5) * 3
    elif name == "grain":
        noise = torch.rand(n, 1, size, size, generator=g)
        p = (noise[:, 0] - 0.5) * 2
    elif name == "plaid":
        p = 0.5 * (torch.sin(freq * 0.7 * xx + phase) + torch.sin(freq * 0.7 * yy + 2 * phase))
    elif name == "waves":
        p = torch.sin(freq * xx + 2.0 * torch.sin(freq * 0.5 * yy + phase))
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(name)
    return (p.clamp(-1, 1) + 1) / 2


def render_textures(
    families: torch.Tensor, size: int, generator: torch.Generator, brightness: float = 0.55
) -> torch.Tensor:
    """Textures float[N,3,size,size] in [0, ``brightness``] for the given family indices."""
    families = torch.as_tensor(families, dtype=torch.long)
    n = families.shape[0]
    out = torch.empty(n, 3, size, size)
    n_fam = len(TEXTURE_FAMILIES)
    for f in range(n_fam):
        idx = torch.nonzero(families == f).flatten()
        if len(idx) == 0:
            continue
        m = len(idx)
        pattern = _pattern(f, m, size, generator)  # [m,H,W]
        hue = (f / n_fam + (torch.rand(m, generator=generator) - 0.5) * 0.04) % 1.0
        sat = 0.55 + 0.35 * torch.rand(m, generator=generator)
        dark = _hsv_to_rgb(hue, sat, 0.10 + 0.15 * torch.rand(m, generator=generator))
        light = _hsv_to_rgb(hue, sat * 0.8, 0.75 + 0.25 * torch.rand(m, generator=generator))
        tex = dark[:, :, None, None] + (light - dark)[:, :, None, None] * pattern[:, None]
        out[idx] = tex * brightness
    return out


def composite(ink: torch.Tensor, background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw ink (float[N,1,H,W] in [0,1]) in a bright random colour over ``background``."""
    n = ink.shape[0]
    colour = 0.8 + 0.2 * torch.rand(n, 3, 1, 1, generator=generator)
    return background * (1 - ink) + colour * ink
