"""LIME for images (Ribeiro et al., 2016) on SLIC superpixels.

For each image: SLIC superpixels 0..K-1; S binary samples z in {0,1}^K (the first is all
ones, the others uniform); sample z shows superpixel k when z_k = 1 and fills it with a
baseline colour otherwise (the image's mean colour by default). Each sample is weighted
by the kernel pi(z) = sqrt(exp(-d(z)^2 / width^2)), d = cosine distance between z and the
all-ones vector (width 0.25, as in the reference ``lime`` package), and a weighted ridge
regression (alpha = 1, with intercept) of the target scores P(t | x_z) on z gives one
coefficient per superpixel; the heatmap paints each superpixel with its coefficient.

All T targets of an image come from the same samples (one set of forward passes per
image); the ridge fits of all images and targets are solved at once in closed form.
The model's mode is not changed: call ``model.eval()`` first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skimage.segmentation import slic
from torch import nn

from xgir.errors import XgirError, warn
from xgir.explain._blackbox import (
    auto_batch_size,
    check_positive,
    generator,
    images_for,
    predict_probs,
    prepare,
    score_samples,
    take,
)
from xgir.explain.baselines import ALIASES
from xgir.progress import Progress


@dataclass
class LimeFit:
    """Everything a LIME run computed (N images, S samples, K = max superpixels, T targets).

    Attributes:
        heatmaps: float[N,T,H,W] superpixel coefficients painted on the image.
        segments: long[N,H,W] superpixel labels 0..n_segments[i]-1.
        n_segments: int[N] superpixels per image.
        samples: float[N,S,K] binary samples (columns >= n_segments[i] are 0).
        weights: float[N,S] kernel weights.
        scores: float[N,S,T] target probability scores of the samples.
        coef: float[N,K,T] ridge coefficients (0 for padding columns).
        intercept: float[N,T].
    """

    heatmaps: torch.Tensor
    segments: torch.Tensor
    n_segments: torch.Tensor
    samples: torch.Tensor
    weights: torch.Tensor
    scores: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor


class LIME:
    """LIME explainer: ``LIME(n_samples=1000)(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        n_samples: perturbed samples per image (the first shows every superpixel).
        n_segments: approximate number of SLIC superpixels.
        compactness: SLIC compactness; default 10 for 3-channel images (segmented in Lab)
            and 0.1 otherwise. SLIC runs on each image min-max scaled to [0, 1].
        kernel_width: width of the cosine-distance kernel.
        alpha: ridge penalty (> 0).
        fill: colour of hidden superpixels, in the baseline vocabulary of
            :mod:`xgir.explain.baselines`: ``"mean"`` (the image's mean colour per channel) or
            ``"zeros"`` (``"zero"``); or a number, or one value per channel.
        seed: seed of the sample generator (on the input's device).
        batch_size: perturbed images per forward pass (None: from the image size and device,
            :func:`~xgir.explain._blackbox.auto_batch_size`).
        progress: show a progress bar.
    """

    def __init__(self, *, n_samples: int = 1000, n_segments: int = 50,
                 compactness: float | None = None, kernel_width: float = 0.25,
                 alpha: float = 1.0, fill: str | float | Sequence[float] = "mean",
                 seed: int = 0, batch_size: int | None = None, progress: bool = True) -> None:
        check_positive(n_samples=n_samples, n_segments=n_segments, kernel_width=kernel_width,
                       alpha=alpha)
        if compactness is not None:
            check_positive(compactness=compactness)
        if isinstance(fill, str):
            if ALIASES.get(fill, fill) not in ("mean", "zeros"):
                raise XgirError(f"fill must be 'mean', 'zeros', a number or one value per channel, got '{fill}'")
            fill = ALIASES.get(fill, fill)
        self.n_samples = int(n_samples)
        self.n_segments = int(n_segments)
        self.compactness = compactness
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)
        self.fill = fill
        self.seed = int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.progress = progress

    def segments(self, x: torch.Tensor) -> torch.Tensor:
        """SLIC superpixels long[N,H,W] on x's device, labels 0..K_i-1 without gaps."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise XgirError(f"x must be 4-D [N,C,H,W], got {shape}")
        channels = x.shape[1]
        images = x.detach().float().cpu().numpy()
        out = []
        for img in images:
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            if channels == 1:
                labels = slic(img[0], n_segments=self.n_segments, start_label=0,
                              compactness=self.compactness_for(channels), channel_axis=None)
            else:
                labels = slic(np.moveaxis(img, 0, -1), n_segments=self.n_segments,
                              compactness=self.compactness_for(channels), start_label=0,
                              channel_axis=-1, convert2lab=channels == 3)
            if labels.min() != 0:
                raise XgirError(f"SLIC returned labels starting at {labels.min()}, expected 0")
            _, labels = np.unique(labels, return_inverse=True)  # 0..K-1 without gaps
            out.append(torch.from_numpy(labels.reshape(img.shape[-2:]).astype(np.int64)))
        return torch.stack(out).to(x.device)

    def compactness_for(self, channels: int) -> float:
        """SLIC's compactness: the given one, else 10 for colour images (segmented in Lab,
        0..100) and 0.1 for others (values in [0, 1])."""
        return self.compactness or (10.0 if channels == 3 else 0.1)

    def _fill(self, x: torch.Tensor) -> torch.Tensor:
        """Baseline colours float[N,C]."""
        n, c = x.shape[:2]
        if isinstance(self.fill, str):  # "mean" or "zeros" (checked in __init__)
            return x.mean((2, 3)) if self.fill == "mean" else x.new_zeros(n, c)
        value = torch.as_tensor(self.fill, dtype=x.dtype, device=x.device).flatten()
        if value.numel() not in (1, c):
            raise XgirError(f"fill needs 1 or {c} values, got {value.numel()}")
        return value.expand(c).expand(n, c)

    def kernel(self, samples: torch.Tensor, n_segments: torch.Tensor) -> torch.Tensor:
        """Kernel weights float[N,S] of binary samples float[N,S,K] (K_i = n_segments[i]):
        sqrt(exp(-d^2 / width^2)), d = cosine distance to the all-ones vector (1 for z = 0)."""
        shown = samples.sum(-1)
        cos = shown.sqrt() / n_segments[:, None].to(samples.dtype).sqrt()
        d = 1.0 - cos
        return torch.exp(-(d ** 2) / self.kernel_width ** 2).sqrt()

    def _ridge(self, z: torch.Tensor, w: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted ridge with intercept for all images and targets: z [N,S,K], w [N,S],
        y [N,S,T] -> (coef [N,K,T], intercept [N,T]); minimises
        sum_s w_s (y_s - z_s b - b0)^2 + alpha |b|^2 (as sklearn's Ridge)."""
        dtype = torch.float32 if z.device.type == "mps" else torch.float64
        z, w, y = z.to(dtype), w.to(dtype), y.to(dtype)
        sw = w.sum(1, keepdim=True)  # [N,1]
        zm = (w[..., None] * z).sum(1) / sw  # [N,K]
        ym = (w[..., None] * y).sum(1) / sw  # [N,T]
        zc, yc = z - zm[:, None], y - ym[:, None]
        wz = w[..., None] * zc
        gram = wz.transpose(1, 2) @ zc + self.alpha * torch.eye(z.shape[2], dtype=dtype,
                                                                device=z.device)
        coef = torch.linalg.solve(gram, wz.transpose(1, 2) @ yc)  # [N,K,T]
        intercept = ym - (zm[:, None, :] @ coef)[:, 0]
        return coef.float(), intercept.float()

    @torch.no_grad()
    def fit(self, model: nn.Module, x: torch.Tensor, targets: Any) -> LimeFit:
        """Run LIME and return the heatmaps with the samples, weights and fits behind them."""
        bs = auto_batch_size(images_for(model, x), self.batch_size)
        x, tg, _ = prepare(model, x, targets, bs)
        n, c, h, w = x.shape
        seg = self.segments(x)
        n_seg = seg.flatten(1).amax(1) + 1  # [N]
        few = (n_seg < 2).nonzero().flatten().tolist()
        if few:  # a warning, not an error: the constant map is still LIME's honest answer
            used = self.compactness_for(c)  # higher: more regular, grid-like superpixels (noise and texture
            warn(                           # merge into one at low compactness)
                f"LIME: SLIC found a single superpixel in image(s) {few[:5]}, so their maps are constant; "
                f"raise n_segments (now {self.n_segments}) or compactness (now {used:g}; higher gives regular "
                f"superpixels), e.g. --param n_segments=100 --param compactness={10 * used:g}")
        k = int(n_seg.max())
        gen = generator(x.device, self.seed)
        z = (torch.rand(n, self.n_samples, k, generator=gen, device=x.device) < 0.5).float()
        z[:, 0] = 1.0
        z *= (torch.arange(k, device=x.device) < n_seg[:, None]).float()[:, None, :]
        fill = self._fill(x)[:, :, None, None]
        scores = torch.empty(n, self.n_samples, tg.shape[1], device=x.device)
        group = min(n, bs)
        chunk = max(1, bs // group)
        steps = math.ceil(n / group) * math.ceil(self.n_samples / chunk)
        bar = Progress(total=steps, desc="LIME", enabled=self.progress)
        for g0 in range(0, n, group):
            g1 = min(n, g0 + group)
            flat = seg[g0:g1].flatten(1)  # [G,HW]
            for s0 in range(0, self.n_samples, chunk):
                zc = z[g0:g1, s0:s0 + chunk]  # [G,B,K]
                b = zc.shape[1]
                shown = zc.gather(2, flat[:, None, :].expand(-1, b, -1)).view(g1 - g0, b, 1, h, w)
                xs = x[g0:g1, None] * shown + fill[g0:g1, None] * (1 - shown)
                probs = predict_probs(model, xs.view(-1, c, h, w), xs.shape[0] * b)
                scores[g0:g1, s0:s0 + b] = score_samples(take(tg, slice(g0, g1)),
                                                         probs.view(g1 - g0, b, -1))
                bar.update()
        bar.close()
        weights = self.kernel(z, n_seg)
        coef, intercept = self._ridge(z, weights, scores)
        index = seg.flatten(1)[:, None, :].expand(-1, coef.shape[2], -1)
        heat = coef.transpose(1, 2).gather(2, index)
        return LimeFit(heat.view(n, -1, h, w), seg, n_seg, z, weights, scores, coef, intercept)

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """Heatmaps float[N,T,H,W]: each superpixel painted with its ridge coefficient."""
        return self.fit(model, x, targets).heatmaps
