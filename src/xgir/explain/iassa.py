"""IASSA: iterative and adaptive sampling with spatial attention (Vasu & Long, WACV 2020).

Round 0 is a sliding-window occlusion: square windows (45 px, stride 8 at 224 px, scaled
to the image: window = 45 * H / 224 px, stride = 8 * H / 224 px, per axis) whose centres
run over the whole image, so border windows lie partly off it. Each window w sets the
pixels inside it to ``fill`` (0) and gives the score drop d_w = P(t | x) - P(t | x_w).

Accumulation (the returned heatmap): the per-pixel running mean of window drops,

    S(p) = sum_{w counted at p} d_w / #{w counted at p},

one sum and one count per (image, target, pixel). Round 0 counts every window covering
p. A refinement round counts its windows only at pixels inside that round's HAR: every
window covering an HAR pixel overlaps the HAR and was evaluated, so there the round's
windows are complete; a pixel outside the HAR saw only the HAR-side windows of the round
and would be biased by them, so it keeps its earlier mean. Each of the ``iterations``
rounds:

1. spatial attention: features of the clean image from several conv layers of the model
   (all ``nn.Conv2d`` modules by default, or the named ``layers``; the input pixels if the
   model has none), each resized to a reduced ``grid``, standardised per channel and
   L2-normalised per position, concatenated and scaled so that f_i . f_j is the mean
   cosine similarity over layers. A[i, j] = softmax_i(f_i . f_j / temperature), so that
   (S A)_j = sum_i S_i A[i, j] is an affinity-weighted mean of S over the positions whose
   features resemble those at j, wherever they are. It is computed on the grid in blocks
   of positions j (never the full P x P matrix at once); no trained parameters;
2. S' = lam * S + (1 - lam) * upsample(pool(S) A);
3. high-attention region HAR = {S' > min S' + t (max S' - min S')};
4. new windows, shrunk by ``window_shrink`` (45 -> 43.5 -> ... px) and ``stride_shrink``
   (8 -> 7.8 -> ... px) per round, on a grid over the image; only windows that overlap
   the HAR are evaluated, and their drops are added to the running mean on HAR pixels.

The number of rounds is fixed (no ground-truth mask selects the final iteration: that
would leak labels); with ``stop_tol`` an (image, target) also stops early once a round
changes S by less than ``stop_tol`` in relative L2 norm (a label-free criterion).
Drops are computed in batches of windows over all images; each (image, target) keeps
its own HAR and windows. Window sizes are rounded to whole pixels. The method draws no
random numbers; on CUDA the sums use atomic adds (``index_add_``), so repeated runs may
differ in the last bits. The model's mode is not changed: call ``model.eval()`` first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.explain._blackbox import auto_batch_size, check_positive, images_for, predict_probs, prepare, take
from xgir.models.split import get_module
from xgir.progress import Progress

ATTENTION_GROUP = 16  # images whose attention features are held at once


@dataclass
class IassaFit:
    """An IASSA run: heatmaps float[N,T,H,W] (running mean of the drops), the HAR bool
    [N,T,H,W] of each refinement round and the number of windows evaluated per round."""

    heatmaps: torch.Tensor
    har: list[torch.Tensor] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)


def axis_windows(length: int, size: float, stride: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows along one axis of ``length`` px: centres 0, stride, 2 stride, ... up to the
    last pixel; window [lo, hi) of round(size) px around each centre (clipped later).
    Returns (lo, hi) long[W], without duplicates."""
    width = max(1, round(size))
    stride = max(float(stride), 1e-3)
    centres = torch.arange(0.0, length - 1 + 1e-9, stride, dtype=torch.float64)
    if float(centres[-1]) < length - 1 - stride / 2:
        centres = torch.cat([centres, torch.tensor([length - 1.0], dtype=torch.float64)])
    lo = torch.unique(torch.floor(centres - width / 2 + 0.5).long())
    return lo, lo + width


def _indicator(lo: torch.Tensor, hi: torch.Tensor, length: int, device: torch.device
               ) -> torch.Tensor:
    """float[W,length]: 1 inside each window."""
    pos = torch.arange(length, device=device)
    return ((pos >= lo.to(device)[:, None]) & (pos < hi.to(device)[:, None])).float()


class IASSA:
    """IASSA explainer: ``IASSA()(model, x[N,C,H,W], targets) -> float[N,T,H,W]``.

    Args:
        iterations: refinement rounds after the initial sliding-window occlusion.
        lam: weight of S against the attended map S A.
        threshold: t of the HAR threshold min + t (max - min).
        window, stride: initial window and stride in px at ``reference_size`` px (scaled to
            the image per axis).
        reference_size: image side the window and stride refer to.
        window_shrink, stride_shrink: factors per round.
        layers: module names for the attention features (default: every ``nn.Conv2d``).
        grid: side of the reduced attention grid (at most the image side).
        temperature: softmax temperature of the cosine affinities.
        block_size: positions per attention block.
        fill: value of occluded pixels.
        stop_tol: optional label-free early stop (relative change of S per round).
        batch_size: occluded images per forward pass (None: from the image size and device).
        progress: show a progress bar.
    """

    def __init__(self, *, iterations: int = 5, lam: float = 0.5, threshold: float = 0.3,
                 window: float = 45.0, stride: float = 8.0, reference_size: int = 224,
                 window_shrink: float = 43.5 / 45, stride_shrink: float = 7.8 / 8,
                 layers: Sequence[str] | None = None, grid: int = 32,
                 temperature: float = 0.1, block_size: int = 256, fill: float = 0.0,
                 stop_tol: float | None = None, batch_size: int | None = None,
                 progress: bool = True) -> None:
        check_positive(window=window, stride=stride, reference_size=reference_size,
                       window_shrink=window_shrink, stride_shrink=stride_shrink, grid=grid,
                       temperature=temperature, block_size=block_size)
        if iterations < 0:
            raise XgirError(f"iterations must be >= 0, got {iterations}")
        if not 0 <= lam <= 1 or not 0 <= threshold < 1:
            raise XgirError(f"need 0 <= lam <= 1 and 0 <= threshold < 1, got {lam}, {threshold}")
        if isinstance(layers, str):
            layers = [layers]
        self.iterations = int(iterations)
        self.lam = float(lam)
        self.threshold = float(threshold)
        self.window = float(window)
        self.stride = float(stride)
        self.reference_size = float(reference_size)
        self.window_shrink = float(window_shrink)
        self.stride_shrink = float(stride_shrink)
        self.layers = list(layers) if layers is not None else None
        self.grid = int(grid)
        self.temperature = float(temperature)
        self.block_size = int(block_size)
        self.fill = float(fill)
        self.stop_tol = stop_tol
        self.batch_size = None if batch_size is None else int(batch_size)
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.progress = progress

    # -- spatial attention -------------------------------------------------------------
    def _modules(self, model: nn.Module) -> list[nn.Module]:
        if self.layers is not None:
            if not self.layers:
                raise XgirError("layers is empty: name at least one layer or pass None")
            return [get_module(model, name) for name in self.layers]
        return [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    @torch.no_grad()
    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Attention features float[N,D,P] of images x (P = gh * gw grid positions):
        per layer resized to the grid, standardised per channel, L2-normalised per
        position; concatenated and divided by sqrt(#layers)."""
        h, w = x.shape[-2:]
        size = (min(self.grid, h), min(self.grid, w))
        modules = self._modules(model)
        names = self.layers or [f"conv#{i}" for i in range(len(modules))]
        captured: list[list[torch.Tensor]] = [[] for _ in modules]

        def reduce(out: torch.Tensor, name: str) -> torch.Tensor:
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                shape = getattr(out, "shape", type(out).__name__)
                raise XgirError(f"layer '{name}' gives {shape}; attention needs [N,C,h,w] maps")
            return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False,
                                 antialias=out.shape[-2] > size[0] or out.shape[-1] > size[1])

        def hook(i: int):
            def save(_m: nn.Module, _inp: Any, out: Any) -> None:
                captured[i].append(reduce(out, names[i]))
            return save

        if not modules:  # not a CNN: the pixels themselves
            maps = [reduce(x, "input")]
        else:
            handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
            try:
                bs = auto_batch_size(x, self.batch_size)
                for start in range(0, x.shape[0], bs):
                    model(x[start:start + bs])
            finally:
                for handle in handles:
                    handle.remove()
            missing = [names[i] for i, c in enumerate(captured) if not c]
            if missing:
                raise XgirError(f"layers {missing} were not called in the model's forward pass")
            maps = [torch.cat(c) for c in captured]
        feats = []
        for m in maps:
            f = m.flatten(2)  # [N,C,P]
            f = (f - f.mean(2, keepdim=True)) / (f.std(2, keepdim=True) + 1e-6)
            feats.append(f / (f.norm(dim=1, keepdim=True) + 1e-6))
        return torch.cat(feats, 1) / math.sqrt(len(feats))

    def attend(self, feats: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """(S A) float[N,T,P] for maps s float[N,T,P] and features float[N,D,P], with
        A[i, j] = softmax_i(f_i . f_j / temperature), in blocks of positions j."""
        n, _, p = feats.shape
        out = torch.empty_like(s)
        block = max(1, min(self.block_size, (1 << 24) // max(1, n * p)))
        for j0 in range(0, p, block):
            logits = torch.einsum("ndi,ndj->nij", feats, feats[:, :, j0:j0 + block])
            a = torch.softmax(logits / self.temperature, dim=1)
            out[:, :, j0:j0 + block] = torch.einsum("nti,nij->ntj", s, a)
        return out

    def _attended(self, model: nn.Module, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """S' = lam S + (1 - lam) upsample(pool(S) A) for s float[N,T,H,W]. The features
        are recomputed for groups of ``ATTENTION_GROUP`` images (one clean forward pass per
        round), so their memory stays bounded for deep models and large batches."""
        n, t, h, w = s.shape
        size = (min(self.grid, h), min(self.grid, w))
        pooled = F.adaptive_avg_pool2d(s, size).flatten(2)
        att = torch.empty_like(pooled)
        for g0 in range(0, n, ATTENTION_GROUP):
            g = slice(g0, g0 + ATTENTION_GROUP)
            att[g] = self.attend(self.features(model, x[g]), pooled[g])
        att = F.interpolate(att.view(n, t, *size), size=(h, w), mode="bilinear",
                            align_corners=False)
        return self.lam * s + (1 - self.lam) * att

    # -- sampling ------------------------------------------------------------------------
    def _windows(self, h: int, w: int, k: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column indicators float[Wr,H], float[Wc,W] of round k."""
        ws, ss = self.window * self.window_shrink ** k, self.stride * self.stride_shrink ** k
        rows = _indicator(*axis_windows(h, ws * h / self.reference_size,
                                        ss * h / self.reference_size), h, device)
        cols = _indicator(*axis_windows(w, ws * w / self.reference_size,
                                        ss * w / self.reference_size), w, device)
        return rows, cols

    @torch.no_grad()
    def fit(self, model: nn.Module, x: torch.Tensor, targets: Any) -> IassaFit:
        """Run IASSA; the heatmaps with the HAR of every refinement round."""
        bs = auto_batch_size(images_for(model, x), self.batch_size)
        x, tg, probs = prepare(model, x, targets, bs)
        n, c, h, w = x.shape
        t = tg.shape[1]
        clean = tg.probability_scores(probs)  # [N,T]
        drops = torch.zeros(n, t, h, w, device=x.device)
        count = torch.zeros(n, t, h, w, device=x.device)
        active = torch.ones(n, t, dtype=torch.bool, device=x.device)
        result = IassaFit(drops)
        bar = Progress(total=0, desc="IASSA", enabled=self.progress)
        saliency = drops
        per = max(1, (1 << 22) // (t * h * w))
        for k in range(self.iterations + 1):
            rows, cols = self._windows(h, w, k, x.device)
            if k == 0:
                sel = torch.ones(n, t, rows.shape[0], cols.shape[0], dtype=torch.bool,
                                 device=x.device)
            else:
                attended = self._attended(model, x, saliency)
                lo, hi = attended.amin((2, 3), keepdim=True), attended.amax((2, 3), keepdim=True)
                har = attended > lo + self.threshold * (hi - lo)
                result.har.append(har)
                sel = torch.einsum("rh,nthw,cw->ntrc", rows, har.float(), cols) > 0
                sel &= active[..., None, None]
            round_drops = torch.zeros_like(drops)
            round_count = torch.zeros_like(count)
            pairs = sel.any(1).nonzero()  # [M,3]: image, row window, column window
            result.windows.append(pairs.shape[0])
            bar.add_total(math.ceil(pairs.shape[0] / bs))
            for b0 in range(0, pairs.shape[0], bs):
                img, r, cc = pairs[b0:b0 + bs].unbind(1)
                inside = rows[r][:, :, None] * cols[cc][:, None, :]  # [B,H,W]
                occluded = x[img] * (1 - inside[:, None]) + self.fill * inside[:, None]
                scores = take(tg, img).probability_scores(
                    predict_probs(model, occluded, occluded.shape[0]))
                used = sel[img, :, r, cc].float()  # [B,T]
                value = (clean[img] - scores) * used
                for s0 in range(0, img.shape[0], per):  # bounded memory, no device sync
                    sl = slice(s0, s0 + per)
                    rm, cm = rows[r[sl]], cols[cc[sl]]
                    round_drops.index_add_(0, img[sl], torch.einsum("bt,bh,bw->bthw",
                                                                    value[sl], rm, cm))
                    round_count.index_add_(0, img[sl], torch.einsum("bt,bh,bw->bthw",
                                                                    used[sl], rm, cm))
                bar.update()
            if k > 0:  # only HAR pixels: there every covering window was evaluated
                round_drops *= har
                round_count *= har
            drops += round_drops
            count += round_count
            previous = saliency
            saliency = torch.where(count > 0, drops / count.clamp(min=1e-12), 0.0)
            if self.stop_tol is not None and k > 0:
                change = (saliency - previous).flatten(2).norm(dim=2)
                active &= change >= self.stop_tol * previous.flatten(2).norm(dim=2)
        bar.close()
        result.heatmaps = saliency
        return result

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """Heatmaps float[N,T,H,W]: running mean of the occlusion drops (module docstring)."""
        return self.fit(model, x, targets).heatmaps
