"""Test helpers for the black-box explainer tests; the models live in :mod:`xgir.testing`."""

from __future__ import annotations

import torch

from xgir.testing import COLOURS, DECOY, REGION, SIZE, RegionNet, region_images, region_mask

__all__ = ["COLOURS", "DECOY", "REGION", "SIZE", "RegionNet", "assert_close", "epg", "region_images",
           "region_mask"]


def epg(heatmap: torch.Tensor, mask: torch.Tensor) -> float:
    """Energy-based pointing game: positive mass inside ``mask`` over all positive mass."""
    pos = heatmap.clamp(min=0)
    return float((pos * mask).sum() / pos.sum().clamp(min=1e-12))


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Elementwise |a - b| <= atol + rtol |b| (cheaper to import than torch.testing)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(((a - b).abs() - rtol * b.abs()).max())
    assert err <= atol, f"max deviation {err:.3g} > {atol}"


