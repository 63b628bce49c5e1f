"""Localisation metrics: how much of an explanation falls on a known region.

Every function takes ``heatmaps`` float[N,H,W] (one map per image) or
float[N,T,H,W] (T targets per image) and ``masks`` bool[N,H,W] (broadcast over
the T targets) or bool[N,T,H,W]; it returns one value per map, float[N] or
float[N,T], with no reduction over images.

- A heatmap whose resolution differs from the mask's (a 7x7 Grad-CAM against a
  28x28 mask) is first upsampled bilinearly to the mask's size
  (``align_corners=False``), as explainers upsample to the input.
- Non-finite heatmaps, mismatched shapes and non-boolean masks raise
  :class:`XgirError`.
- Empty masks: ``empty="raise"`` (default) raises :class:`XgirError`;
  ``empty="nan"`` returns NaN for the maps whose mask is empty (average with
  ``torch.nanmean`` and report how many were left out).

Example (one 3x3 map, the object is the right column's top two pixels)::

    >>> import torch
    >>> from xgir.metrics.localisation import epg, iou, pointing_game
    >>> a = torch.tensor([[[0., 1., 3.], [0., 0., 0.], [-1., 0., 0.]]])
    >>> m = torch.zeros(1, 3, 3, dtype=torch.bool); m[0, :2, 2] = True
    >>> epg(a, m)  # 3 of the 4 units of positive mass lie on the object
    tensor([0.7500])
    >>> iou(a, m, threshold=0.5)  # salient {(0,2)} against the 2-pixel mask
    tensor([0.5000])
    >>> pointing_game(a, m, tolerance=0)
    tensor([1.])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xgir.errors import XgirError

EMPTY_RULES = ("raise", "nan")


def _prepare(
    heatmaps: torch.Tensor, masks: torch.Tensor, empty: str, what: str = "mask"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Checked maps float[N,T,H,W] at the mask's size, masks bool[N,T|1,H,W], empty bool[N,T|1]
    and whether the input was [N,H,W]."""
    if not isinstance(heatmaps, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise XgirError("heatmaps and masks must be torch tensors")
    if empty not in EMPTY_RULES:
        raise XgirError(f"empty must be one of {EMPTY_RULES}, got '{empty}'")
    squeeze = heatmaps.ndim == 3
    if heatmaps.ndim not in (3, 4):
        raise XgirError(f"heatmaps must be [N,H,W] or [N,T,H,W], got shape {tuple(heatmaps.shape)}")
    maps = heatmaps[:, None] if squeeze else heatmaps
    if masks.ndim == 3:
        m = masks[:, None]
    elif masks.ndim == 4 and masks.shape[1] in (1, maps.shape[1]):
        m = masks
    else:
        raise XgirError(
            f"{what}s must be [N,H,W] (or [N,T,H,W] with T={maps.shape[1]}), "
            f"got shape {tuple(masks.shape)}"
        )
    if m.shape[0] != maps.shape[0]:
        raise XgirError(f"{maps.shape[0]} heatmaps but {m.shape[0]} {what}s")
    if m.dtype != torch.bool:
        _check_mask_values(m, what)
        m = m != 0
    if not maps.is_floating_point():
        maps = maps.float()
    if not bool(torch.isfinite(maps).all()):
        raise XgirError("heatmaps contain NaN or infinite values")
    if maps.shape[-2:] != m.shape[-2:]:
        n, t = maps.shape[:2]
        maps = F.interpolate(
            maps.reshape(n * t, 1, *maps.shape[-2:]),
            size=tuple(m.shape[-2:]),
            mode="bilinear",
            align_corners=False,
        ).reshape(n, t, *m.shape[-2:])
    m = m.to(maps.device)
    is_empty = ~m.flatten(2).any(-1)
    if empty == "raise" and bool(is_empty.any()):
        idx = torch.nonzero(is_empty)[:, 0].unique().tolist()
        raise XgirError(
            f"{what}s of images {idx[:10]} are empty; pass empty='nan' to score them NaN"
        )
    return maps, m, is_empty, squeeze


def _check_mask_values(masks: torch.Tensor, what: str) -> None:
    """Floating masks must hold only 0 and 1 (NaN and fractions are errors)."""
    if not isinstance(masks, torch.Tensor):
        raise XgirError(f"{what}s must be torch tensors")
    if masks.is_floating_point() and bool(((masks != 0) & (masks != 1)).any()):
        raise XgirError(f"{what}s must be boolean (or 0/1), got other values")


def _finish(values: torch.Tensor, is_empty: torch.Tensor, squeeze: bool) -> torch.Tensor:
    values = torch.where(is_empty.expand_as(values), torch.full_like(values, float("nan")), values)
    return values[:, 0] if squeeze else values


def epg(heatmaps: torch.Tensor, masks: torch.Tensor, empty: str = "raise") -> torch.Tensor:
    """Energy pointing game: sum(A+ * M) / sum(A+), the share of positive attribution inside M.

    A map with no positive mass (all values <= 0) scores 0 and is counted (it does
    not point at the object). Returns float[N] or float[N,T] in [0, 1].
    """
    maps, m, is_empty, squeeze = _prepare(heatmaps, masks, empty)
    pos = maps.clamp(min=0)
    total = pos.sum((-2, -1))
    inside = (pos * m).sum((-2, -1))
    score = torch.where(total > 0, inside / total.clamp(min=torch.finfo(pos.dtype).tiny), 0.0)
    return _finish(score, is_empty, squeeze)


def seg_epg(heatmaps: torch.Tensor, seg_masks: torch.Tensor, empty: str = "raise") -> torch.Tensor:
    """SegEPG: EPG against a segmentation mask (the object's pixels) rather than its bounding
    box; the same formula as :func:`epg`. Compare with :func:`box_epg`."""
    return epg(heatmaps, seg_masks, empty=empty)


def boxes_from_masks(masks: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """The tight bounding box of each mask, grown by ``margin`` px (clipped to the image), as a
    mask: bool[...,H,W] -> bool[...,H,W]. An empty mask gives an empty box.

    >>> import torch
    >>> m = torch.zeros(4, 4, dtype=torch.bool); m[1, 1] = m[2, 2] = True
    >>> boxes_from_masks(m).int()
    tensor([[0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 0]], dtype=torch.int32)
    """
    if masks.ndim < 2:
        raise XgirError(f"masks must be [...,H,W], got shape {tuple(masks.shape)}")
    _check_mask_values(masks, "mask")
    m = masks != 0
    h, w = m.shape[-2:]
    rows, cols = m.any(-1), m.any(-2)  # [...,H], [...,W]
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    if margin < 0:
        raise XgirError(f"box margin must be >= 0 pixels, got {margin}")
    big = h + w + 2 * margin + 1  # an empty mask's box stays empty whatever the margin
    top = torch.where(rows, ar_h, big).amin(-1) - margin
    bottom = torch.where(rows, ar_h, -big).amax(-1) + margin
    left = torch.where(cols, ar_w, big).amin(-1) - margin
    right = torch.where(cols, ar_w, -big).amax(-1) + margin
    in_rows = (ar_h >= top[..., None]) & (ar_h <= bottom[..., None])
    in_cols = (ar_w >= left[..., None]) & (ar_w <= right[..., None])
    return in_rows[..., :, None] & in_cols[..., None, :]


def box_epg(heatmaps: torch.Tensor, masks: torch.Tensor, empty: str = "raise") -> torch.Tensor:
    """EPG against the bounding box of each mask (the usual EPG with box annotations)."""
    return epg(heatmaps, boxes_from_masks(masks), empty=empty)


def minmax_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each [H,W] map to [0, 1]; a constant map becomes all zeros.

    >>> import torch
    >>> minmax_normalise(torch.tensor([[1., 3.], [2., 5.]]))
    tensor([[0.0000, 0.5000],
            [0.2500, 1.0000]])
    """
    lo = maps.amin((-2, -1), keepdim=True)
    hi = maps.amax((-2, -1), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp(min=torch.finfo(maps.dtype).tiny), 0.0)


def iou(
    heatmaps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5, empty: str = "raise"
) -> torch.Tensor:
    """IoU of the salient region with the mask.

    The salient region is {min-max normalised A+ >= threshold}; a map whose positive
    part is constant (e.g. all <= 0) has no salient region and scores 0.
    Returns float[N] or float[N,T] in [0, 1].
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise XgirError(f"threshold must lie in [0, 1], got {threshold}")
    maps, m, is_empty, squeeze = _prepare(heatmaps, masks, empty)
    norm = minmax_normalise(maps.clamp(min=0))
    salient = (norm >= threshold) & (norm > 0)
    inter = (salient & m).sum((-2, -1)).float()
    union = (salient | m).sum((-2, -1)).float()
    score = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
    return _finish(score, is_empty, squeeze)


def default_tolerance(height: int) -> float:
    """The pointing-game tolerance in pixels: 15 px at 224 px, scaled to ``height``.

    >>> default_tolerance(112)
    7.5
    """
    return 15.0 * height / 224.0


def pointing_game(
    heatmaps: torch.Tensor,
    masks: torch.Tensor,
    tolerance: float | None = None,
    empty: str = "raise",
) -> torch.Tensor:
    """Pointing game: 1.0 when the map's maximum lies within ``tolerance`` px (Euclidean) of a
    mask pixel, else 0.0.

    ``tolerance=None`` uses 15 px at 224 px scaled to the mask's height
    (``15 * H / 224``); 0 requires the maximum to lie inside the mask. Among tied maxima
    the first in row-major order is used; a constant map points nowhere and misses.
    Returns float[N] or float[N,T].
    """
    maps, m, is_empty, squeeze = _prepare(heatmaps, masks, empty)
    n, t, h, w = maps.shape
    r = default_tolerance(h) if tolerance is None else float(tolerance)
    if not math.isfinite(r) or r < 0:
        raise XgirError(f"tolerance must be a finite number >= 0 pixels, got {tolerance}")
    flat = maps.reshape(n, t, h * w)
    top = flat.argmax(-1)  # [N,T]
    py, px = (top // w).float(), (top % w).float()
    yy = torch.arange(h, device=maps.device, dtype=torch.float32)
    xx = torch.arange(w, device=maps.device, dtype=torch.float32)
    d2 = (yy[:, None] - py[..., None, None]) ** 2 + (xx[None, :] - px[..., None, None]) ** 2
    d2 = torch.where(m.expand(n, t, h, w), d2, float("inf"))
    hit = d2.flatten(2).amin(-1) <= r * r + 1e-6
    constant = flat.amax(-1) == flat.amin(-1)
    score = (hit & ~constant).float()
    return _finish(score, is_empty, squeeze)


def irrelevant_overlap(
    heatmaps: torch.Tensor, irrelevant_masks: torch.Tensor, empty: str = "raise"
) -> torch.Tensor:
    """Attribution overlap with irrelevant features: the share of absolute attribution on
    the irrelevant mask, sum(|A| * M_irr) / sum(|A|) (|A| normalised to sum 1 per map, as in
    Bekkemoen's thesis, table 6.4). Lower is better. An all-zero map scores 0.
    Returns float[N] or float[N,T] in [0, 1].

    >>> import torch
    >>> a = torch.tensor([[[0., 1., 3.], [0., 0., 0.], [-1., 0., 0.]]])
    >>> irr = torch.zeros(1, 3, 3, dtype=torch.bool); irr[0, :2, 2] = True
    >>> irrelevant_overlap(a, irr)  # |A| = 5 in all, 3 of it on the mask
    tensor([0.6000])
    """
    maps, m, is_empty, squeeze = _prepare(heatmaps, irrelevant_masks, empty, what="irrelevant mask")
    mag = maps.abs()
    total = mag.sum((-2, -1))
    share = torch.where(
        total > 0, (mag * m).sum((-2, -1)) / total.clamp(min=torch.finfo(mag.dtype).tiny), 0.0
    )
    return _finish(share, is_empty, squeeze)
