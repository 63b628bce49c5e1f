"""DaC, Decompose-and-Compose (Noohdani, Hosseini, Parast, Araghi, Baghshah,
*Decompose-and-Compose: A Compositional Approach to Mitigating Spurious Correlation*, CVPR 2024;
code: github.com/fhn98/DaC). An annotation-free anchor: attribution masks, no group label.

The ERM model's attribution map of an image marks its "causal" part m_i (the paper: XGrad-CAM
of the last convolutional stage, upsampled to the image, m_i = the pixels at or above the
image's own q-quantile of the map). Among the low-loss images (the ERM's cross-entropy at or
below the ``quantile`` of all losses: there the model looks at the object), each image i is
combined with a partner j **of another class**:

    masked_i    = m_i x_i + (1 - m_i) mu                                       label y_i
    composite_i = m_i x_i + (1 - m_i)(1 - m_j) x_j + (1 - m_i) m_j mu          label y_i

(i's object, j's context where j's object is not, mu where both are context but j's object
was; mu is the per-channel mean image colour). With a frozen backbone f, only a new last
layer is trained, on

    L = CE(originals) + alpha CE(masked) + alpha CE(composites)        (each term a mean)

This is the authors' ``train_masked_low_loss``: Adam (lr 5e-3), StepLR (every 5 epochs x 0.5),
20 epochs, batch 64, alpha 10, low-loss quantile 0.6 (their Waterbirds command), the head
re-initialised (Xavier-uniform weights, zero bias); partners drawn uniformly with replacement
among the selected images of the other class.

What differs from the paper: the features of the masked and composite images are computed
once (``rounds`` draws of partners, in batches of ``chunk`` images) instead of fresh partners in
every minibatch, and the head is trained on the cached features with the three terms as sample
weights (1/N, alpha/n_sel, alpha/(rounds n_sel): the same objective up to the factor
1 + 2 alpha, to which Adam is insensitive), minibatches drawn by weight, N / 64 steps per epoch;
mu is the per-channel mean over all the images given (theirs: over the minibatch); the masks
are the caller's: :func:`dac_masks` thresholds a heatmap at one quantile chosen by the caller,
where the paper picks each image's quantile in {0.3, ..., 0.8} at the knee of the ERM's loss on
the masked image (left out here); with more than 2 classes, partners come from any other
class (the paper's code is binary). Model selection (the paper: the epoch of best
group-labelled validation accuracy) is the caller's ``score``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.train.weighted_head import check_head, check_labelled_features, fit_weighted_head


def dac_compose(x_i: torch.Tensor, m_i: torch.Tensor, x_j: torch.Tensor, m_j: torch.Tensor,
                mu: torch.Tensor) -> torch.Tensor:
    """Composite images float[N,3,H,W]: m_i x_i + (1 - m_i)(1 - m_j) x_j + (1 - m_i) m_j mu, for
    images x_i, x_j float[N,3,H,W] in [0, 1], masks m_i, m_j float or bool [N,H,W] (1 = the
    object) and mu broadcastable to the images (e.g. the mean colour float[3,1,1])."""
    if x_i.ndim != 4 or x_i.shape != x_j.shape:
        raise XgirError(f"DaC: images must be two [N,C,H,W] of one shape, got {tuple(x_i.shape)} and "
                        f"{tuple(x_j.shape)}")
    want = (x_i.shape[0], *x_i.shape[2:])
    if tuple(m_i.shape) != want or tuple(m_j.shape) != want:
        raise XgirError(f"DaC: masks must be [N,H,W] = {list(want)}, got {tuple(m_i.shape)} and {tuple(m_j.shape)}")
    a = m_i.to(x_i.dtype)[:, None]
    b = m_j.to(x_i.dtype)[:, None]
    return a * x_i + (1 - a) * (1 - b) * x_j + (1 - a) * b * mu


def dac_masks(heatmaps: torch.Tensor, quantile: float = 0.8, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Masks bool[N,H,W]: each heatmap float[N,u,v] (bilinearly resized to ``size`` = (H, W)
    first when given) at or above its own ``quantile`` (0.8 keeps about the top 20 %; the
    authors' fallback when their knee search finds none)."""
    if heatmaps.ndim != 3 or not heatmaps.is_floating_point():
        raise XgirError(f"DaC: heatmaps must be float [N,u,v], got {tuple(heatmaps.shape)}")
    if not 0.0 <= quantile < 1.0:
        raise XgirError(f"DaC: the mask quantile must lie in [0, 1), got {quantile}")
    maps = heatmaps.float()
    if size is not None:
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    thr = torch.quantile(maps.flatten(1), quantile, dim=1)
    return maps >= thr[:, None, None]


def dac_pairs(labels: torch.Tensor, losses: torch.Tensor, *, quantile: float = 0.6,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DaC's pairs (i long[S], j long[S]): i = the images whose ERM loss float[N] is at or below
    the ``quantile`` of all losses (in index order), j = for each i a partner drawn uniformly,
    with replacement, among the selected images of another class (``generator`` seeds the draw).
    XgirError when the selected images hold a single class."""
    if labels.ndim != 1 or losses.shape != labels.shape:
        raise XgirError(f"DaC: labels and losses must both be [N], got {tuple(labels.shape)} and {tuple(losses.shape)}")
    if len(labels) == 0:
        raise XgirError("DaC: no samples")
    if not 0.0 < quantile <= 1.0:
        raise XgirError(f"DaC: the low-loss quantile must lie in (0, 1], got {quantile}")
    t = torch.quantile(losses.double(), quantile)
    sel = (losses.double() <= t).nonzero().flatten()
    ys = labels[sel]
    if len(torch.unique(ys)) < 2:
        raise XgirError(f"DaC: the low-loss images (quantile {quantile}) hold one class only; raise the quantile")
    partners = torch.empty_like(sel)
    for c in torch.unique(ys).tolist():
        mine = (ys == c).nonzero().flatten()
        others = sel[ys != c]
        pick = torch.randint(len(others), (len(mine),), generator=generator)
        partners[mine] = others[pick]
    return sel, partners


@torch.no_grad()
def _features(features_fn: Callable[[torch.Tensor], torch.Tensor], make: Callable[[torch.Tensor], torch.Tensor],
              n: int, chunk: int) -> torch.Tensor:
    """features_fn(make(idx)) over index chunks of size ``chunk``, concatenated on the CPU."""
    out = []
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(s + chunk, n))
        out.append(torch.as_tensor(features_fn(make(idx))).detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def _masker(x: torch.Tensor, m: torch.Tensor, sel: torch.Tensor,
            mu: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows ``r`` of the selection -> m x + (1 - m) mu."""
    def make(r: torch.Tensor) -> torch.Tensor:
        a = m[sel[r]].to(x.dtype)[:, None]
        return a * x[sel[r]] + (1 - a) * mu
    return make


def _composer(x: torch.Tensor, m: torch.Tensor, i_idx: torch.Tensor, j_idx: torch.Tensor,
              mu: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows ``r`` of the pairs -> their composites (one round's partners bound)."""
    return lambda r: dac_compose(x[i_idx[r]], m[i_idx[r]], x[j_idx[r]], m[j_idx[r]], mu)


def dac_head(
    features_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    erm_head: nn.Linear,
    *,
    quantile: float = 0.6,
    alpha: float = 10.0,
    rounds: int = 1,
    epochs: int = 20,
    lr: float = 5e-3,
    batch_size: int = 64,
    lr_step: tuple[int, float] | None = (5, 0.5),
    seed: int = 0,
    chunk: int = 64,
    score: Callable[[nn.Linear], float] | None = None,
) -> tuple[nn.Linear, dict[str, float]]:
    """DaC's head ``nn.Linear(D, K)`` on raw features (module docstring), from the frozen
    extractor ``features_fn`` (images float[B,3,H,W] -> features float[B,D]), images ``x``
    float[N,3,H,W] in [0, 1], masks float/bool[N,H,W] (1 = the object), labels long[N] and the
    ERM head ``nn.Linear(D, K)`` (its losses pick the low-loss images). ``features_fn`` gets CPU
    tensors of at most ``chunk`` images (it moves them to its device); N + (1 + rounds) S images
    are encoded, S = about ``quantile`` N the low-loss images.

    Returns the head and {"selected": low-loss images, "loss_threshold", "composites",
    "mask_share": the mean share of object pixels, "epochs", "steps"} (+ "best_epoch",
    "best_score" with ``score``)."""
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        raise XgirError(f"DaC: images must be float [N,C,H,W], got "
                        f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    n = len(x)
    if not torch.is_tensor(masks) or tuple(masks.shape) != (n, *x.shape[2:]):
        raise XgirError(f"DaC: masks must be [N,H,W] = {[n, *x.shape[2:]]}, got "
                        f"{tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise XgirError(f"DaC: alpha must be >= 0, got {alpha}")
    if rounds < 1 or chunk < 1 or batch_size < 1:
        raise XgirError(f"DaC: rounds, chunk and batch_size must be >= 1, got {rounds}, {chunk}, {batch_size}")
    if not isinstance(erm_head, nn.Linear) or erm_head.bias is None:
        raise XgirError(f"DaC: the ERM head must be an nn.Linear with a bias, got {type(erm_head).__name__}")
    _, y = check_labelled_features(torch.zeros(n, 1), labels, erm_head.out_features, "DaC")
    m = masks  # bool or float; converted per chunk (a float copy of all masks could be large)
    h = _features(features_fn, lambda i: x[i], n, chunk)
    if h.ndim != 2 or len(h) != n:
        raise XgirError(f"DaC: features_fn must map images [B,C,H,W] to features [B,D], got {tuple(h.shape)}")
    k = check_head(erm_head, h.shape[1], "DaC")
    h, y = check_labelled_features(h, y, k, "DaC")
    w0 = erm_head.weight
    with torch.no_grad():
        losses = F.cross_entropy(erm_head(h.to(device=w0.device, dtype=w0.dtype)).float().cpu(), y, reduction="none")
    mu = torch.zeros(x.shape[1], dtype=torch.float64)
    for s in range(0, n, chunk):
        mu += x[s : s + chunk].double().sum(dim=(0, 2, 3))
    mu = (mu / (n * x.shape[2] * x.shape[3])).to(x.dtype)[:, None, None]
    share = sum(float(m[s : s + chunk].double().sum()) for s in range(0, n, chunk)) / m.numel()
    gen = torch.Generator().manual_seed(seed)
    sel, _ = dac_pairs(y, losses, quantile=quantile, generator=gen)
    s_n = len(sel)
    h_masked = _features(features_fn, _masker(x, m, sel, mu), s_n, chunk)
    comps = []
    for _ in range(rounds):
        i_idx, j_idx = dac_pairs(y, losses, quantile=quantile, generator=gen)
        comps.append(_features(features_fn, _composer(x, m, i_idx, j_idx, mu), s_n, chunk))
    h_all = torch.cat([h, h_masked, *comps])
    y_all = torch.cat([y, y[sel], *[y[sel]] * rounds])
    w_all = torch.cat([torch.full((n,), 1.0 / n, dtype=torch.float64),
                       torch.full((s_n,), alpha / s_n, dtype=torch.float64),
                       torch.full((rounds * s_n,), alpha / (rounds * s_n), dtype=torch.float64)])
    init = nn.Linear(h.shape[1], k)
    nn.init.xavier_uniform_(init.weight, generator=torch.Generator().manual_seed(seed))
    nn.init.zeros_(init.bias)
    steps_per_epoch = math.ceil(n / batch_size)
    batch = math.ceil(len(h_all) / steps_per_epoch)
    head, info = fit_weighted_head(h_all, y_all, w_all, k, init=init, epochs=epochs, lr=lr, batch_size=batch,
                                   optimizer="adam", lr_step=lr_step, seed=seed, score=score, desc="DaC")
    return head, {"selected": s_n, "loss_threshold": float(torch.quantile(losses.double(), quantile)),
                  "composites": rounds * s_n, "mask_share": share, **info}
