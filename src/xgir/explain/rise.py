"""RISE: randomized input sampling for explanation (Petsiuk et al., 2018).

M random binary s x s grids (each cell kept with probability p) are bilinearly upsampled
to (s+1) x (s+1) cells of size ceil(H/s) x ceil(W/s) and cropped to H x W at a random
shift, giving soft masks M_i float[H,W]. The saliency of target c is

    saliency_c = 1 / (M p) * sum_i P(c | x * M_i) * M_i

where P(c | .) is the target's probability score (class probability, summed probability
of a cluster, or weighted sum of probabilities). Masks are drawn from a seeded generator
on the input's device and scored in chunks: each chunk of masks is applied to a group of
images at once (at most ``batch_size`` masked images per forward pass).

The model's mode is not changed: call ``model.eval()`` first.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
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
from xgir.progress import Progress


class RISE:
    """RISE explainer: ``RISE(n_masks=2000)(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        n_masks: number of random masks M.
        s: grid size (cells per side before upsampling).
        p: probability of keeping a cell.
        seed: seed of the mask generator (same seed, same masks on the same device).
        batch_size: masked images per forward pass (None: from the image size and device,
            :func:`~xgir.explain._blackbox.auto_batch_size`).
        center: subtract the mean score over masks before weighting,
            saliency_c = 1/(M p) sum_i (P_i - mean_j P_j) M_i. Off by default (the paper's
            formula); the raw map carries a near-constant offset of about mean_i P_i on every
            pixel, which centring removes (pixels the model ignores then get ~0).
        progress: show a progress bar.
    """

    def __init__(self, *, n_masks: int = 2000, s: int = 8, p: float = 0.5, seed: int = 0,
                 batch_size: int | None = None, center: bool = False, progress: bool = True) -> None:
        check_positive(n_masks=n_masks, s=s, p=p)
        if p > 1:
            raise XgirError(f"p (keep probability) must lie in (0, 1], got {p}")
        self.n_masks = int(n_masks)
        self.s = int(s)
        self.p = float(p)
        self.seed = int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.center = bool(center)
        self.progress = progress

    def _draw(self, height: int, width: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary grids float[M,1,s,s] and shifts long[M] (rows, columns)."""
        gen = generator(device, self.seed)
        grids = (torch.rand(self.n_masks, 1, self.s, self.s, generator=gen, device=device)
                 < self.p).float()
        cell_h, cell_w = math.ceil(height / self.s), math.ceil(width / self.s)
        dy = torch.randint(0, cell_h, (self.n_masks,), generator=gen, device=device)
        dx = torch.randint(0, cell_w, (self.n_masks,), generator=gen, device=device)
        return grids, dy, dx

    def _render(self, grids: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                height: int, width: int) -> torch.Tensor:
        """Masks float[B,H,W] in [0,1] from grids [B,1,s,s] and shifts [B]."""
        cell_h, cell_w = math.ceil(height / self.s), math.ceil(width / self.s)
        up = F.interpolate(grids, size=((self.s + 1) * cell_h, (self.s + 1) * cell_w),
                           mode="bilinear", align_corners=False)[:, 0]
        rows = dy[:, None] + torch.arange(height, device=grids.device)
        cols = dx[:, None] + torch.arange(width, device=grids.device)
        batch = torch.arange(grids.shape[0], device=grids.device)
        return up[batch[:, None, None], rows[:, :, None], cols[:, None, :]]

    def masks(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All M masks float[M,H,W] in [0,1], exactly those :meth:`__call__` uses on ``device``."""
        device = torch.device(device)
        grids, dy, dx = self._draw(height, width, device)
        return self._render(grids, dy, dx, height, width)

    @torch.no_grad()
    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """Saliency float[N,T,H,W] of each image for each target (see module docstring)."""
        bs = auto_batch_size(images_for(model, x), self.batch_size)
        x, tg, _ = prepare(model, x, targets, bs)
        n, c, h, w = x.shape
        t = tg.shape[1]
        grids, dy, dx = self._draw(h, w, x.device)
        group = min(n, bs)
        chunk = max(1, bs // group)
        saliency = torch.zeros(n, t, h, w, device=x.device)
        score_sum = torch.zeros(n, t, device=x.device)
        mask_sum = torch.zeros(h, w, device=x.device)
        steps = math.ceil(n / group) * math.ceil(self.n_masks / chunk)
        bar = Progress(total=steps, desc="RISE", enabled=self.progress)
        for g0 in range(0, n, group):
            xg, tgg = x[g0:g0 + group], take(tg, slice(g0, g0 + group))
            for m0 in range(0, self.n_masks, chunk):
                sl = slice(m0, m0 + chunk)
                masks = self._render(grids[sl], dy[sl], dx[sl], h, w)  # [B,H,W]
                b = masks.shape[0]
                masked = (xg[:, None] * masks[None, :, None]).reshape(-1, c, h, w)
                probs = predict_probs(model, masked, masked.shape[0]).reshape(xg.shape[0], b, -1)
                scores = score_samples(tgg, probs)  # [G,B,T]
                saliency[g0:g0 + group] += torch.einsum("gbt,bhw->gthw", scores, masks)
                score_sum[g0:g0 + group] += scores.sum(1)
                if g0 == 0:
                    mask_sum += masks.sum(0)
                bar.update()
        bar.close()
        saliency /= self.n_masks * self.p
        if self.center:
            mean_score = score_sum / self.n_masks
            saliency -= mean_score[..., None, None] * (mask_sum / (self.n_masks * self.p))
        return saliency
