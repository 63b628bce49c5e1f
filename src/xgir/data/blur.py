"""The one Gaussian blur of xgir: the "blur" reference of the attribution baselines
(``xgir.explain.baselines``), XGIR's blurred empty image x0 (``xgir.correct.xgir``) and the
start image of insertion (``xgir.metrics.faithfulness``) are all :func:`gaussian_blur`.

It lives in ``xgir.data`` (the lowest layer) because it is a plain image operation: every
stage that needs it (explain, metrics, correct, and training code if it ever augments with it)
can import it, and none of them owns it.

Conventions, stated once:

- sigma in pixels, default :func:`default_sigma` = max(H, W) / 8 (a blur that scales with the
  image: 4 px on 32 px images, 28 px on 224 px ones);
- kernel radius ceil(3 sigma) (kernel 2 ceil(3 sigma) + 1 taps, normalised to sum 1);
- mirror padding (the edge pixel is not repeated: ``d c b | a b c d | c b a``; PyTorch's
  ``"reflect"``, OpenCV's default ``BORDER_REFLECT_101``, scipy's ``mode="mirror"``), folded
  as often as needed so that any image size works, even one smaller than the kernel.

It equals ``scipy.ndimage.gaussian_filter(x, sigma, mode="mirror", radius=ceil(3 sigma))`` on
each channel (tests/test_blur.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xgir.errors import XgirError

SIGMA_FRACTION = 1 / 8  # default sigma = SIGMA_FRACTION * max(H, W)


def default_sigma(height: int, width: int) -> float:
    """The default blur sigma in pixels for an H x W image: max(H, W) / 8."""
    return max(height, width) * SIGMA_FRACTION


def mirror_index(size: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """long[size + 2 radius]: source index of each padded position under mirror padding
    (period 2 (size - 1), so radii beyond the image size fold back again)."""
    idx = torch.arange(-radius, size + radius, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """float[2 radius + 1]: exp(-t^2 / (2 sigma^2)) for t = -radius..radius, normalised to sum 1
    (one axis of the separable kernel; also SSIM's window in ``xgir.metrics.sanity``)."""
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float | None = None, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of images float[N,C,H,W] -> float[N,C,H,W] (same dtype, device).

    Args:
        sigma: standard deviation in pixels; None: :func:`default_sigma` of the image size;
            0 returns a copy of x.
        radius: kernel radius in pixels (default ceil(3 sigma)); e.g. ``radius=5, sigma=5``
            is the 11-tap kernel of the RISE code.

    >>> x = torch.zeros(1, 1, 9, 9)
    >>> x[0, 0, 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)  # radius 3: a 7 x 7 kernel, its mass kept inside the image
    >>> round(float(y.sum()), 6), bool(y[0, 0, 4, 4] > y[0, 0, 4, 5] > y[0, 0, 4, 8])
    (1.0, True)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise XgirError(f"gaussian_blur needs images [N,C,H,W], got {getattr(x, 'shape', type(x))}")
    n, c, h, w = x.shape
    s = default_sigma(h, w) if sigma is None else float(sigma)
    if not math.isfinite(s) or s < 0:
        raise XgirError(f"blur sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    if s == 0 or x.numel() == 0:
        return x.clone()
    r = math.ceil(3 * s) if radius is None else int(radius)
    if r < 0:
        raise XgirError(f"blur radius must be >= 0, got {radius!r}")
    k = gaussian_kernel(s, r, x.dtype, x.device)
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(y.index_select(3, mirror_index(w, r, x.device)), k.view(1, 1, 1, -1))
    y = F.conv2d(y.index_select(2, mirror_index(h, r, x.device)), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)
