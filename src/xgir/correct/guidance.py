"""Model guidance losses: train a classifier to look at the annotated object.

Every loss takes an attribution map A float[N,H,W] for the true class and the relevant
(object) mask M bool[N,H,W] (1 = object), except RRR / RRR*, which take the model and the
input because they are defined on their own input gradient (Ross et al. 2017):

- ``energy``:  1 - sum(A+ M) / sum(A+)                      (Rao et al. 2023)
- ``energy*``: 1 - EPG / area(M)^alpha, EPG = the energy ratio, area = fraction of the image
  covered by M (the reproducibility study's area-normalised variant; alpha = 0 gives Energy)
- ``l1``:      mean over pixels of (1 - M) * A+ / max(A+)      (normalised map outside M)
- ``ppce``:    -sum(M log(A+ / max A+)) / sum(M)               (per-pixel cross-entropy inside M)
- ``rrr-map``: sum((1 - M) (A / max|A|)^2)                     (the study's RRR*, on the map)
- ``l1-mask``: mean over pixels of |M - A+ / max A+|            (the study's L1: also inside M)
- ``rrr``:     sum(((1 - M) * d sum_c log p_c / dx)^2)         (Ross et al.: all classes)
- ``rrr*``:    the same on d log p_y / dx                      (true class only)

Per-sample values are averaged over the samples that carry an annotation. Attributions
are differentiable in the model's parameters (``create_graph=True``) so the losses train:

- ``grad``: d s_y / dx summed over channels (s_y = the true-class logit)
- ``input_x_grad``: sum_c a * d s_y / da at the input (a = x, or a B-cos model's [x, 1 - x]) or
  at a named layer (a = its output, the map upsampled bilinearly to the input); on a bias-free
  X-DNN in eval mode it equals Integrated Gradients from the zero baseline
- ``bcos``: the same in B-cos explanation mode (dynamic scales and norm statistics detached):
  the B-cos contribution map W(x)ᵀa ⊙ a (:func:`xgir.explain.bcos.contributions`)
- ``gradcam``: signed Grad-CAM at a named layer, sum_k mean_hw(d s_y / dA_k) A_k, upsampled
  bilinearly to the input: :func:`xgir.explain.gradcam.grad_cam` with ``differentiable=True``
  (the explainer's own implementation, keeping the graph so the map is a differentiable
  function of the weights). The losses use its positive part.

``rrr-map`` is the guidance study's RRR* (Rao et al. 2023): RRR's penalty on an attribution map
rather than on the input gradient of log p, sum over pixels outside M of (A / max |A|)^2;
``l1-mask`` is the study's L1 (Model-Guidance ``losses.py``: ``L1Loss(A+ / max A+, M)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.explain.gradcam import grad_cam
from xgir.metrics.localisation import boxes_from_masks
from xgir.models.bcos import bce_loss, is_bcos

EPS = 1e-8
MAP_LOSSES = ("energy", "energy*", "l1", "ppce", "rrr-map", "l1-mask")
GRAD_LOSSES = ("rrr", "rrr*")
LOSSES = MAP_LOSSES + GRAD_LOSSES
ATTRIBUTIONS = ("grad", "input_x_grad", "gradcam", "bcos")
LAYER_ATTRIBUTIONS = ("input_x_grad", "gradcam", "bcos")  # those that read a layer (Grad-CAM needs one)


# ----------------------------------------------------------------- checks
def _check_map_mask(attr: torch.Tensor, mask: torch.Tensor) -> None:
    if attr.ndim != 3:
        raise XgirError(f"attribution maps must be [N,H,W], got shape {tuple(attr.shape)}")
    if tuple(mask.shape) != tuple(attr.shape):
        raise XgirError(
            f"mask shape {tuple(mask.shape)} does not match attribution shape {tuple(attr.shape)}"
        )
    if not torch.isfinite(attr).all():
        raise XgirError("attribution maps contain NaN or inf; check the model and input")


# ----------------------------------------------------------------- map losses
def energy_loss(attr: torch.Tensor, mask: torch.Tensor, *, reduce: bool = True) -> torch.Tensor:
    """1 - sum(A+ M) / sum(A+) per sample (0 when all positive attribution is inside M)."""
    _check_map_mask(attr, mask)
    pos = attr.clamp(min=0).flatten(1)
    inside = (pos * mask.flatten(1).float()).sum(1)
    per = 1.0 - inside / (pos.sum(1) + EPS)
    return per.mean() if reduce else per


def energy_star_loss(
    attr: torch.Tensor, mask: torch.Tensor, *, alpha: float = 0.5, reduce: bool = True
) -> torch.Tensor:
    """1 - EPG / area(M)^alpha per sample; area = fraction of the image covered by M."""
    _check_map_mask(attr, mask)
    m = mask.flatten(1).float()
    area = m.mean(1).clamp(min=EPS)
    epg = 1.0 - energy_loss(attr, mask, reduce=False)
    per = 1.0 - epg / area.pow(alpha)
    return per.mean() if reduce else per


def _normalise(attr: torch.Tensor) -> torch.Tensor:
    """A+ / max(A+) per sample, float[N,H*W] in [0, 1]."""
    pos = attr.clamp(min=0).flatten(1)
    return pos / (pos.amax(1, keepdim=True) + EPS)


def l1_loss(attr: torch.Tensor, mask: torch.Tensor, *, reduce: bool = True) -> torch.Tensor:
    """Mean over pixels of the max-normalised A+ outside M per sample."""
    _check_map_mask(attr, mask)
    per = (_normalise(attr) * (~mask).flatten(1).float()).mean(1)
    return per.mean() if reduce else per


def ppce_loss(attr: torch.Tensor, mask: torch.Tensor, *, reduce: bool = True) -> torch.Tensor:
    """Per-pixel cross-entropy inside M: -sum(M log(A+/max A+)) / sum(M) per sample
    (0 when the normalised map is 1 on the whole mask; the log is clamped at log 1e-6)."""
    _check_map_mask(attr, mask)
    m = mask.flatten(1).float()
    logp = torch.log(_normalise(attr).clamp(min=1e-6))
    per = -(m * logp).sum(1) / m.sum(1).clamp(min=1.0)
    return per.mean() if reduce else per


def l1_mask_loss(attr: torch.Tensor, mask: torch.Tensor, *, reduce: bool = True) -> torch.Tensor:
    """The guidance study's L1: mean over pixels of |M - A+ / max A+| per sample (the normalised
    map pulled to 1 inside M and to 0 outside; ``l1`` penalises only the outside)."""
    _check_map_mask(attr, mask)
    per = (mask.flatten(1).float() - _normalise(attr)).abs().mean(1)
    return per.mean() if reduce else per


def rrr_map_loss(attr: torch.Tensor, mask: torch.Tensor, *, reduce: bool = True) -> torch.Tensor:
    """The guidance study's RRR*: sum over pixels outside M of (A / max|A|)^2 per sample
    (the map scaled so that its largest magnitude is 1; an all-zero map scores 0)."""
    _check_map_mask(attr, mask)
    flat = attr.flatten(1)
    scaled = flat / (flat.abs().amax(1, keepdim=True) + EPS)
    per = ((~mask).flatten(1).float() * scaled.pow(2)).sum(1)
    return per.mean() if reduce else per


def map_loss(
    name: str, attr: torch.Tensor, mask: torch.Tensor, *, alpha: float = 0.5, reduce: bool = True
) -> torch.Tensor:
    """The map loss ``name`` (one of ``MAP_LOSSES``) of attribution maps and relevant masks."""
    if name == "energy":
        return energy_loss(attr, mask, reduce=reduce)
    if name == "energy*":
        return energy_star_loss(attr, mask, alpha=alpha, reduce=reduce)
    if name == "l1":
        return l1_loss(attr, mask, reduce=reduce)
    if name == "ppce":
        return ppce_loss(attr, mask, reduce=reduce)
    if name == "rrr-map":
        return rrr_map_loss(attr, mask, reduce=reduce)
    if name == "l1-mask":
        return l1_mask_loss(attr, mask, reduce=reduce)
    raise XgirError(f"unknown guidance loss '{name}'; choose one of: {', '.join(LOSSES)}")


# ----------------------------------------------------------------- RRR
def rrr_loss(
    model: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    reduce: bool = True,
) -> torch.Tensor:
    """Right for the right reasons: sum over pixels and channels of ((1 - M) * grad)^2.

    ``grad`` = d sum_c log p_c / dx (Ross et al.) when ``labels`` is None, else d log p_y / dx
    (RRR*). x float[N,C,H,W], mask bool[N,H,W] relevant. Differentiable in the parameters.
    """
    if x.ndim != 4 or tuple(mask.shape) != (x.shape[0], x.shape[2], x.shape[3]):
        raise XgirError(
            f"mask shape {tuple(mask.shape)} does not match input shape {tuple(x.shape)}"
        )
    x = x.detach().requires_grad_(True)
    logp = F.log_softmax(model(x), dim=1)
    score = logp.sum() if labels is None else logp.gather(1, labels.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    outside = (~mask).unsqueeze(1).float()
    per = ((outside * grad) ** 2).flatten(1).sum(1)
    return per.mean() if reduce else per


# ----------------------------------------------------------------- attributions
def attribution_map(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "grad",
    layer: str | None = None,
    create_graph: bool = True,
) -> torch.Tensor:
    """Attribution float[N,H,W] of the true-class logit, differentiable in the parameters.

    method: ``grad`` (input gradient summed over channels), ``input_x_grad`` and ``bcos`` (at
    the input, or at ``layer``), ``gradcam`` (needs ``layer``); see the module docstring.
    """
    if method == "gradcam":
        if layer is None:
            raise XgirError("attribution 'gradcam' needs a layer name, e.g. layer='conv2'")
        return grad_cam(model, x, labels, layer, relu=False, differentiable=create_graph)[:, 0]
    if method in ("input_x_grad", "bcos"):
        from xgir.explain.bcos import contributions

        return contributions(model, x, labels, layer=layer, explanation=method == "bcos",
                             create_graph=create_graph)[:, 0]
    if method != "grad":
        raise XgirError(f"unknown attribution '{method}'; choose one of: {', '.join(ATTRIBUTIONS)}")
    if layer is not None:
        raise XgirError(f"attribution 'grad' is read at the input; a layer ({layer!r}) goes with "
                        f"{', '.join(LAYER_ATTRIBUTIONS)}")
    x = x.detach().requires_grad_(True)
    score = model(x).gather(1, labels.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return grad.sum(1)


# ----------------------------------------------------------------- masks
def annotation_flags(n: int, fraction: float, *, seed: int = 0) -> torch.Tensor:
    """bool[n]: round(fraction * n) images (at least 1 when fraction > 0) chosen at random."""
    if not 0.0 <= fraction <= 1.0:
        raise XgirError(f"annotated fraction must be in [0, 1], got {fraction}")
    k = 0 if fraction == 0 else max(1, round(fraction * n))
    flags = torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    flags[torch.randperm(n, generator=g)[:k]] = True
    return flags


# ----------------------------------------------------------------- the guidance term
@dataclass
class Guidance:
    """A guidance penalty ``penalty(model, x, labels, masks) -> scalar`` (mean over samples).

    loss: one of ``LOSSES``; attribution: one of ``ATTRIBUTIONS`` (ignored by RRR);
    layer: where the attribution is read (Grad-CAM's layer; None = the input for
    ``input_x_grad`` and ``bcos``); alpha: the Energy* area exponent.
    """

    loss: str = "rrr"
    attribution: str = "grad"
    layer: str | None = None
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise XgirError(
                f"unknown guidance loss '{self.loss}'; choose one of: {', '.join(LOSSES)}"
            )
        if self.loss in MAP_LOSSES and self.attribution not in ATTRIBUTIONS:
            raise XgirError(
                f"unknown attribution '{self.attribution}'; "
                f"choose one of: {', '.join(ATTRIBUTIONS)}"
            )
        if self.loss in MAP_LOSSES and self.attribution == "gradcam" and not self.layer:
            raise XgirError("the gradcam attribution needs a layer name, e.g. layer='conv2'")
        if self.loss in MAP_LOSSES and self.layer and self.attribution not in LAYER_ATTRIBUTIONS:
            raise XgirError(f"the {self.attribution} attribution is read at the input; a layer goes with "
                            f"{', '.join(LAYER_ATTRIBUTIONS)}")

    def __call__(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        if self.loss == "rrr":
            return rrr_loss(model, x, masks)
        if self.loss == "rrr*":
            return rrr_loss(model, x, masks, labels)
        attr = attribution_map(model, x, labels, method=self.attribution, layer=self.layer)
        return map_loss(self.loss, attr, masks, alpha=self.alpha)


def _batch_masks(
    batch: dict[str, torch.Tensor], mask_key: str, invert: bool, box: bool, box_margin: int
) -> torch.Tensor:
    if mask_key not in batch:
        raise XgirError(f"the dataset has no '{mask_key}' masks; guidance needs masks")
    m = batch[mask_key].bool()
    if invert:
        m = ~m
    if box:
        m = boxes_from_masks(m, box_margin)
    return m


def guidance_term(
    guidance: Guidance,
    weight: float,
    *,
    mask_key: str = "mask",
    invert: bool = False,
    box: bool = False,
    box_margin: int = 0,
) -> Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """An ``extra_loss(model, batch, logits)`` for :func:`xgir.train.fit_classifier`:
    ``weight`` * the penalty on the batch's annotated samples (``batch["has_annotation"]``;
    every sample when absent), zero when the batch has none.

    mask_key: the batch key of the masks; ``invert=True`` reads them as irrelevant regions
    (e.g. ``decoy_mask``) and uses their complement as M; ``box`` replaces M by its bounding box.
    """

    def extra(
        model: nn.Module, batch: dict[str, torch.Tensor], logits: torch.Tensor
    ) -> torch.Tensor:
        sel = batch.get("has_annotation")
        x, y = batch["image"], batch["label"]
        m = _batch_masks(batch, mask_key, invert, box, box_margin)
        if sel is not None:
            sel = sel.bool()
            if not sel.any():
                return logits.sum() * 0.0
            x, y, m = x[sel], y[sel], m[sel]
        return weight * guidance(model, x, y, m)

    return extra


def with_annotations(dataset: ImageDataset, flags: torch.Tensor) -> ImageDataset:
    """A copy of ``dataset`` whose ``extras["has_annotation"]`` is ``flags`` bool[N]."""
    if flags.shape != (len(dataset),):
        raise XgirError(
            f"annotation flags must have shape ({len(dataset)},), got {tuple(flags.shape)}"
        )
    out = dataset.subset(torch.arange(len(dataset)))
    out.extras["has_annotation"] = flags.bool()
    return out


def calibrate_lambda(
    model: nn.Module,
    dataset: ImageDataset,
    guidance: Guidance,
    *,
    mask_key: str = "mask",
    invert: bool = False,
    box: bool = False,
    box_margin: int = 0,
    batch_size: int = 128,
    batches: int = 2,
    seed: int = 0,
) -> float:
    """lambda making the penalty about equal to the cross-entropy at the start (RRR's rule).

    Mean CE over ``batches`` random batches of the whole set divided by the mean penalty over
    up to ``batches`` batches of annotated images (``extras["has_annotation"]``, all when absent).
    Returns 1.0 when the penalty is zero.
    """
    from xgir.train import model_device

    device = model_device(model)
    g = torch.Generator().manual_seed(seed)
    n = len(dataset)
    flags = dataset.extras.get("has_annotation", torch.ones(n, dtype=torch.bool))
    annotated = torch.nonzero(flags).flatten()
    if len(annotated) == 0:
        raise XgirError("no annotated images: set a positive annotated fraction")
    was_training = model.training
    model.eval()
    ce, pen = [], []
    pick = torch.randperm(n, generator=g)[: batch_size * batches]
    ann = annotated[torch.randperm(len(annotated), generator=g)][: batch_size * batches]
    for start in range(0, len(pick), batch_size):
        idx = pick[start : start + batch_size]
        with torch.no_grad():
            logits = model(dataset.images[idx].to(device))
            task = bce_loss if is_bcos(model) else F.cross_entropy  # the loss the model trains with
            ce.append(float(task(logits, dataset.labels[idx].to(device))))
    for start in range(0, len(ann), batch_size):
        idx = ann[start : start + batch_size]
        batch = {"image": dataset.images[idx], "label": dataset.labels[idx]}
        if mask_key == "mask" and dataset.masks is not None:
            batch["mask"] = dataset.masks[idx]
        elif mask_key in dataset.extras:
            batch[mask_key] = dataset.extras[mask_key][idx]
        batch = {k: v.to(device) for k, v in batch.items()}
        m = _batch_masks(batch, mask_key, invert, box, box_margin)
        pen.append(float(guidance(model, batch["image"], batch["label"], m).detach()))
    model.train(was_training)
    mean_pen = sum(pen) / len(pen)
    if mean_pen <= 0:
        return 1.0
    return (sum(ce) / len(ce)) / mean_pen


def fine_tune_guided(
    model: nn.Module,
    dataset: ImageDataset,
    guidance: Guidance,
    *,
    weight: float | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    fraction: float = 1.0,
    mask_key: str = "mask",
    invert: bool = False,
    box: bool = False,
    box_margin: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, float]:
    """Train ``model`` (in place) on cross-entropy + ``weight`` * guidance penalty.

    Only a random ``fraction`` of the images (seeded) carry masks; ``weight=None`` chooses it with
    :func:`calibrate_lambda`. Returns (model in eval mode, the weight used).
    """
    from xgir.train import fit_classifier

    flags = annotation_flags(len(dataset), fraction, seed=seed)
    data = with_annotations(dataset, flags)
    if weight is None:
        weight = calibrate_lambda(model, data, guidance, mask_key=mask_key, invert=invert, box=box,
                                  box_margin=box_margin, batch_size=batch_size, seed=seed)
    extra = guidance_term(guidance, weight, mask_key=mask_key, invert=invert, box=box, box_margin=box_margin)
    fit_classifier(
        model,
        data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        extra_loss=extra,
        progress=progress,
        desc=f"guide:{guidance.loss}",
    )
    return model, weight
