"""PNG images from memory: the input, map overlays (:mod:`xgir.viz`) and segment overlays (uint8
arrays in, PNG bytes out). Small images are enlarged by a whole factor (nearest) so that they read on screen."""

from __future__ import annotations

import io

import numpy as np
import torch

DISPLAY = 256  # target display size in pixels


def scale_for(height: int) -> int:
    """Whole enlargement factor of an image ``height`` pixels high (1 for 224 px photos)."""
    return max(1, round(DISPLAY / max(height, 1)))


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """float[C,H,W] in [0,1] -> uint8[H,W,3]."""
    arr = image.detach().cpu().float().clamp(0, 1).numpy()
    arr = np.repeat(arr, 3, 0) if arr.shape[0] == 1 else arr[:3]
    return (arr.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def enlarge(rgb: np.ndarray, k: int) -> np.ndarray:
    return rgb if k == 1 else np.repeat(np.repeat(rgb, k, 0), k, 1)


def png(rgb: np.ndarray) -> bytes:
    """uint8[H,W,3] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def overlay(image: torch.Tensor, heat: torch.Tensor, *, signed: bool = False, alpha: float = 0.8) -> bytes:
    """PNG of the image float[C,H,W] with a map float[H,W] over it, drawn as every xgir figure
    draws maps (:func:`xgir.viz.attribution_rgb`): a signed map (``signed``, or one with negative
    values) in a diverging colour map centred on 0, others in a sequential one from their 1st to
    99th percentile; the opacity follows the value."""
    from xgir.viz import attribution_rgb, kwargs_for

    rgb = attribution_rgb(image, heat, alpha=alpha, **kwargs_for(signed, heat))
    return png(enlarge(rgb, scale_for(image.shape[1])))


def image_png(image: torch.Tensor) -> bytes:
    return png(enlarge(to_rgb(image), scale_for(image.shape[1])))


FLAGGED = np.array([170, 0, 255], np.float32)  # proposals on the explanation's own evidence: violet


def segments_png(image: torch.Tensor, segments: np.ndarray, proposed: list[int],
                 irrelevant: np.ndarray | None = None, flagged: list[int] | tuple[int, ...] = ()) -> bytes:
    """The image with SLIC boundaries (white), proposed segments tinted orange (by rank), flagged
    ones violet (they lie on the explanation's own evidence) and, when given, the rejected
    (irrelevant) pixels bool[H,W] tinted red."""
    from skimage.segmentation import find_boundaries

    k = scale_for(image.shape[1])
    rgb = to_rgb(image).astype(np.float32)
    for rank, sid in enumerate(proposed):
        m = segments == sid
        a = 0.55 - 0.07 * rank
        colour = FLAGGED if sid in flagged else np.array([255, 150, 0], np.float32)
        rgb[m] = (1 - a) * rgb[m] + a * colour
    if irrelevant is not None:
        rgb[irrelevant] = 0.5 * rgb[irrelevant] + 0.5 * np.array([220, 0, 0], np.float32)
    big = enlarge(rgb.clip(0, 255).astype(np.uint8), k)
    seg_big = enlarge(segments[..., None], k)[..., 0]
    big[find_boundaries(seg_big, mode="inner")] = (255, 255, 255)
    return png(big)


def feedback_png(image: torch.Tensor, irrelevant: np.ndarray, relevant: np.ndarray) -> bytes:
    """The image with irrelevant pixels bool[H,W] tinted red and relevant ones green."""
    rgb = to_rgb(image).astype(np.float32)
    for mask, colour in ((irrelevant, (220, 0, 0)), (relevant, (30, 170, 60))):
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array(colour, np.float32)
    return png(enlarge(rgb.clip(0, 255).astype(np.uint8), scale_for(image.shape[1])))


def mask_outline_png(image: torch.Tensor, mask: np.ndarray) -> bytes:
    """The image with ``mask`` bool[H,W] tinted red (the rejected region)."""
    rgb = to_rgb(image).astype(np.float32)
    rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array([220, 0, 0], np.float32)
    return png(enlarge(rgb.clip(0, 255).astype(np.uint8), scale_for(image.shape[1])))
