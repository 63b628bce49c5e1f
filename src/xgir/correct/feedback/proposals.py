"""What the app proposes to the person: which images to ask about and which regions to show.

- images: :func:`select_random`, or :func:`select_uncertain` by a Bayesian model's predictive
  uncertainty;
- regions: :func:`propose_regions`, the SLIC superpixels overlapping the pixels that hold a
  given share of the saliency s = input gradient x upsampled signed Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.explain.gradcam import grad_cam


def saliency_for_proposals(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layer: str
) -> torch.Tensor:
    """Input gradient (summed over channels) times upsampled signed Grad-CAM, float[N,H,W]."""
    from xgir.correct.guidance import attribution_map

    grad = attribution_map(model, images, labels, method="grad", create_graph=False).detach()
    cam = grad_cam(model, images, labels, layer, relu=False)[:, 0]
    return grad * cam


def mass_threshold(saliency: torch.Tensor, mass: float) -> torch.Tensor:
    """bool[N,H,W]: the fewest pixels holding ``mass`` of each map's absolute total."""
    if not 0 < mass <= 1:
        raise XgirError(f"mass must be in (0, 1], got {mass}")
    a = saliency.abs().flatten(1)
    vals, order = a.sort(1, descending=True)
    cum = vals.cumsum(1)
    keep_sorted = (cum - vals) < mass * cum[:, -1:]  # include the pixel that crosses the mass
    keep_sorted &= vals > 0
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.view_as(saliency)


def superpixels(image: torch.Tensor, *, n_segments: int = 40, compactness: float = 0.1) -> np.ndarray:
    """SLIC segments int[H,W] of one image float[C,H,W] in [0,1]."""
    from skimage.segmentation import slic

    arr = image.detach().cpu().double().numpy()
    if arr.shape[0] == 1:
        return slic(
            arr[0], n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=0
        )
    return slic(
        arr.transpose(1, 2, 0), n_segments=n_segments, compactness=compactness, start_label=0
    )


def propose_regions(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layer: str,
    *,
    mass: float = 0.5,
    max_regions: int = 5,
    n_segments: int = 40,
    compactness: float = 0.1,
    sign: str = "positive",
    rank: str = "mean",
) -> list[list[np.ndarray]]:
    """Candidate regions per image: the SLIC superpixels overlapping the pixels that hold ``mass``
    of the saliency s = input gradient x upsampled signed Grad-CAM, at most ``max_regions``.

    sign: ``positive`` scores s+ (pixels whose gradient agrees in sign with the Grad-CAM evidence),
    ``absolute`` scores |s|. rank: order segments by their ``mean`` score (favours small intense
    regions such as a decoy patch) or by their ``sum``. Returns one list of bool[H,W] arrays per
    image (possibly empty).
    """
    from xgir.models.bayes import bayes_layers, sampling

    if images.ndim != 4 or len(images) != len(labels):
        raise XgirError(
            f"images must be [N,C,H,W] with one label each, "
            f"got {tuple(images.shape)}, {len(labels)}"
        )
    if sign not in ("positive", "absolute") or rank not in ("mean", "sum"):
        raise XgirError(f"sign must be positive/absolute and rank mean/sum, got {sign!r}, {rank!r}")
    was = model.training
    model.eval()
    if bayes_layers(model):
        with sampling(model, False):
            sal = saliency_for_proposals(model, images, labels, layer)
    else:
        sal = saliency_for_proposals(model, images, labels, layer)
    model.train(was)
    score = sal.clamp(min=0) if sign == "positive" else sal.abs()
    keep = mass_threshold(score, mass).numpy()
    strength = score.numpy()
    reduce = np.mean if rank == "mean" else np.sum
    out: list[list[np.ndarray]] = []
    for i in range(len(images)):
        seg = superpixels(images[i], n_segments=n_segments, compactness=compactness)
        ids = np.unique(seg[keep[i]])
        scored = sorted(((float(reduce(strength[i][seg == k])), int(k)) for k in ids), reverse=True)
        out.append([seg == k for _, k in scored[:max_regions]])
    return out


def select_random(candidates: Sequence[int] | torch.Tensor, k: int, *, seed: int = 0) -> list[int]:
    """``k`` ids drawn uniformly without replacement from ``candidates``."""
    cand = torch.as_tensor(list(candidates), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    return cand[torch.randperm(len(cand), generator=g)[:k]].tolist()


def select_uncertain(
    model: nn.Module,
    dataset: ImageDataset,
    candidates: Sequence[int] | torch.Tensor,
    k: int,
    *,
    samples: int = 8,
    score: str = "mutual_information",
    seed: int = 0,
) -> list[int]:
    """The ``k`` candidates with the highest predictive uncertainty of a Bayesian model
    (``score``: ``mutual_information`` or ``entropy``), from ``samples`` forward passes."""
    from xgir.models.bayes import predictive

    if score not in ("mutual_information", "entropy"):
        raise XgirError(
            f"unknown uncertainty score '{score}'; choose mutual_information or entropy"
        )
    cand = torch.as_tensor(list(candidates), dtype=torch.long)
    if len(cand) == 0:
        return []
    u = predictive(model, dataset.images[cand], samples, seed=seed)[score]
    return cand[u.argsort(descending=True)[:k]].tolist()

