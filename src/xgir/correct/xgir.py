"""XGIR: XAI-guided interventional retraining of the softmax head (docs/correct.md).

Given a split model (frozen features f, linear head w) and training data:

1. a heatmap e_i for the true class y_i (IOX: Grad-CAM of the class; CWOX: the
   contrastive map of the confusion cluster holding y_i, or any support given);
2. support s_i = 1[e_i / max e_i > delta1], upsampled to the input;
   x'_i = x_i * s_i + x0 * (1 - s_i), x0 the empty image (``empty``: ``"zeros"`` black,
   ``"data-mean"`` the training mean image, ``"blur"`` x_i blurred by
   :func:`xgir.data.blur.gaussian_blur`, sigma ``blur_sigma`` px or max(H, W) / 8 by default;
   ``"zero"`` is accepted for ``"zeros"`` and the old spelling ``"mean"`` for ``"data-mean"``);
3. r_i = f(x'_i) - f(x0): how much each feature unit responds to the core region;
4. lambda_i(u) = (delta2(u) - min(delta2(u), r_i(u))) / delta2(u), clipped to [0, 1]
   (a negative response would give lambda > 1: clipping keeps h' a convex mix);
5. h'_i(u) = (1 - lambda_i(u)) h_i(u) + lambda_i(u) eps, eps ~ N(mean_u, (scale * std_u)^2),
   the per-unit mean and standard deviation of h over the training set;
6. a fresh softmax head is trained on {h'_i, y_i} (``draws`` noise draws per image),
   the extractor frozen.

``response="core-minus-context"`` (xgir's own variant) replaces step 3 by
r_i = f(x_i s_i + x0 (1 - s_i)) - f(x_i (1 - s_i) + x0 s_i): the response to the core
minus the response to the context alone, so that units which respond to any content
(e.g. to texture on an empty background) are not kept for that reason.

delta2 is in units of r (``delta2_mode="absolute"``), or a q-quantile of r that
transfers between models: ``"quantile"`` pools r over all images and units (one
threshold; units that respond weakly everywhere are randomised most), ``"unit-quantile"``
takes the q-quantile of each unit over the images (every unit is randomised on its
weakest q share of images).
Images whose heatmap has no positive mass (empty support) keep their features
(lambda = 0): there is no evidence to tell core from context.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.correct.xgir_config import (  # noqa: F401 - re-exported: the config lives with the method
    EMPTY_ALIASES,
    EMPTY_IMAGES,
    EmptyImage,
    XGIRConfig,
    empty_name,
)
from xgir.data.blur import gaussian_blur
from xgir.errors import XgirError
from xgir.explain.clusters import ConfusionTree
from xgir.explain.cwox import cwox
from xgir.explain.gradcam import grad_cam
from xgir.models.inference import check_images, model_device
from xgir.models.split import FeatureExtractor, split
from xgir.train.features import extract_features, fit_head


def support_from_heatmaps(heatmaps: torch.Tensor, size: tuple[int, int], delta1: float) -> torch.Tensor:
    """s = 1[e / max e > delta1], bilinearly upsampled to ``size``: heatmaps float[N,h,w] ->
    bool[N,H,W]. A map with no positive mass gives an empty support."""
    if heatmaps.ndim != 3:
        raise XgirError(f"heatmaps must be [N,h,w], got shape {tuple(heatmaps.shape)}")
    if isinstance(delta1, bool) or not isinstance(delta1, numbers.Real) or not 0 <= delta1 < 1:
        raise XgirError(f"delta1 is a share of the map's peak in [0, 1), got {delta1!r}")
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in size):
        raise XgirError(f"size must be (H, W), two whole numbers >= 1, got {tuple(size)!r}")
    if torch.isnan(heatmaps).any():
        raise XgirError("heatmaps contain NaN")
    e = heatmaps.float()
    if tuple(e.shape[-2:]) != tuple(size):
        e = F.interpolate(e[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = e.flatten(1).max(dim=1).values.clamp(min=0)
    rel = e / peak.clamp(min=1e-12)[:, None, None]
    return (rel > delta1) & (peak > 0)[:, None, None]


def support_top_fraction(heatmaps: torch.Tensor, size: tuple[int, int], fraction: float) -> torch.Tensor:
    """Matched-size supports: the ``fraction`` of pixels where the bilinearly upsampled map is
    highest, exactly round(fraction H W) pixels per image (ties broken by position): heatmaps
    float[N,h,w] -> bool[N,H,W]. Unlike ``delta1``, which keeps most of an image whose map is
    flat, every map keeps the same share, so precisions compare across maps."""
    if heatmaps.ndim != 3:
        raise XgirError(f"heatmaps must be [N,h,w], got shape {tuple(heatmaps.shape)}")
    if not (isinstance(fraction, int | float) and 0.0 < fraction < 1.0):
        raise XgirError(f"the support fraction must lie in (0, 1), got {fraction!r}")
    if torch.isnan(heatmaps).any():
        raise XgirError("heatmaps contain NaN")
    e = heatmaps.float()
    if tuple(e.shape[-2:]) != tuple(size):
        e = F.interpolate(e[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = e.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    out = torch.zeros_like(flat, dtype=torch.bool)
    out.scatter_(1, flat.topk(k, dim=1).indices, True)
    return out.view(e.shape)


def true_class_heatmaps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layer: str, *,
                        batch_size: int = 256) -> torch.Tensor:
    """IOX: Grad-CAM of the true class at ``layer``, float[N,u,v] (not upsampled)."""
    maps = [grad_cam(model, images[i : i + batch_size], labels[i : i + batch_size, None], layer,
                     upsample=False)[:, 0] for i in range(0, len(images), batch_size)]
    return torch.cat(maps)


def cwox_true_cluster_heatmaps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                               tree: ConfusionTree, level: float, iox: torch.Tensor, deep_layer: str,
                               shallow_layer: str, *, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """CWOX: the contrasted map H(C) of the confusion cluster holding the true class (upsampled
    to the input); the IOX map where the true class is not among the top labels. Returns the
    maps float[N,H,W] and the share of images that fell back to IOX."""
    size = tuple(images.shape[-2:])
    iox_up = F.interpolate(iox[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out = iox_up.clone()
    found = 0
    for i in range(0, len(images), batch_size):
        res = cwox(model, images[i : i + batch_size], tree, level=level, deep_layer=deep_layer,
                   shallow_layer=shallow_layer)
        for j, im in enumerate(res.images):
            y = int(labels[i + j])
            for c, cluster in enumerate(im.clusters):
                if y in cluster:
                    out[i + j] = im.cluster_maps[c]
                    found += 1
                    break
    return out, 1.0 - found / len(images)


def empty_images(x: torch.Tensor, kind: EmptyImage, *, data_mean: torch.Tensor | None = None,
                 blur_sigma: float | None = None) -> torch.Tensor:
    """x0 for each image, float[N,C,H,W]: ``"zeros"`` black, ``"data-mean"`` the data mean image
    float[C,H,W] ``data_mean``, or ``"blur"`` x blurred by :func:`xgir.data.blur.gaussian_blur`
    (sigma ``blur_sigma`` px; None: max(H, W) / 8). Other spellings ``zero`` / ``mean`` accepted."""
    name = empty_name(kind)
    if name == "zeros":
        return torch.zeros_like(x)
    if name == "data-mean":
        if data_mean is None:
            raise XgirError("the 'data-mean' empty image needs the data mean")
        return data_mean.to(x).expand_as(x)
    return gaussian_blur(x, blur_sigma)


def interventional_lambda(r: torch.Tensor, delta2: torch.Tensor | float) -> torch.Tensor:
    """lambda = (delta2 - min(delta2, r)) / delta2, clipped to [0, 1]: float[N,D]; delta2 a
    scalar or float[D] (per unit, positive)."""
    d = torch.as_tensor(delta2, dtype=r.dtype, device=r.device)
    if bool((d <= 0).any()):
        raise XgirError("delta2 must be positive for every unit (a quantile of r gave <= 0: "
                        "choose a higher quantile or an absolute delta2)")
    lam = (d - torch.minimum(d.expand_as(r), r)) / d
    return lam.clamp(0.0, 1.0)


def noisy_features(h: torch.Tensor, lam: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   draws: int, generator: torch.Generator, *, scale: float = 1.0) -> torch.Tensor:
    """h' = (1 - lam) h + lam eps, eps ~ N(mean, (scale std)^2) per unit; ``draws`` draws per
    row: h, lam float[N,D] -> float[draws*N,D] (draw-major order)."""
    n, d = h.shape
    eps = mean + scale * std * torch.randn(draws, n, d, generator=generator)
    out = (1 - lam) * h + lam * eps
    return out.reshape(draws * n, d)


@dataclass
class XGIRRecord:
    """What XGIR did: settings, share of units randomised, distribution of r."""

    config: dict[str, Any]
    delta2_used: list[float]
    frac_units_randomised: float  # mean lambda over images and units
    frac_units_fully_randomised: float  # share of (image, unit) with lambda = 1
    frac_randomised_per_class: dict[int, float]
    r_quantiles: dict[str, list[float]]  # per-unit quantiles of r (5, 25, 50, 75, 95 %)
    support_fraction: float  # mean share of pixels kept
    empty_supports: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def background_features(features: nn.Module, x: torch.Tensor, support: torch.Tensor, x0: torch.Tensor, *,
                        batch_size: int = 512) -> torch.Tensor:
    """f(x * (1 - s) + x0 * s): the features of the images with the support blanked out to the
    empty image, float[N,D] (CPU). The swap's ``context="background"``."""
    s = support[:, None].to(x.dtype)
    return extract_features(features, x * (1 - s) + x0 * s, batch_size)


def unit_responses(features: nn.Module, x: torch.Tensor, support: torch.Tensor, x0: torch.Tensor, *,
                   batch_size: int = 512, response: str = "core") -> torch.Tensor:
    """r = f(x * s + x0 * (1 - s)) - f(x0): float[N,D] (CPU); with
    ``response="core-minus-context"``, r = f(x * s + x0 * (1 - s)) - f(x * (1 - s) + x0 * s)."""
    s = support[:, None].to(x.dtype)
    x_core = x * s + x0 * (1 - s)
    if response == "core-minus-context":
        x_context = x * (1 - s) + x0 * s
        return extract_features(features, x_core, batch_size) - extract_features(features, x_context, batch_size)
    if response == "core-vs-whole":  # a variant: r = f(x') - f(x) (see xgir_variants)
        return extract_features(features, x_core, batch_size) - extract_features(features, x, batch_size)
    zero_x0 = bool((x0 == 0).all())
    f_core = extract_features(features, x_core, batch_size)
    if zero_x0 or bool((x0 == x0[:1]).all()):
        f_empty = extract_features(features, x0[:1], batch_size).expand_as(f_core)
    else:
        f_empty = extract_features(features, x0, batch_size)
    return f_core - f_empty


def delta2_per_unit(r: torch.Tensor, config: XGIRConfig) -> torch.Tensor:
    """delta2 for each unit, float[D], from the responses r float[N,D] and the config."""
    d = r.shape[1]
    if config.delta2_mode == "absolute":
        return torch.full((d,), float(config.delta2))
    if config.delta2_mode == "unit-quantile":
        return torch.quantile(r, config.delta2, dim=0).clamp(min=1e-6)
    pooled = r.flatten()
    if pooled.numel() > 1_000_000:  # torch.quantile's size limit: a fixed strided sample
        pooled = pooled[:: pooled.numel() // 1_000_000 + 1]
    return torch.quantile(pooled, config.delta2).clamp(min=1e-6).expand(d).clone()


def noisy_training_set(h: torch.Tensor, lam: torch.Tensor, labels: torch.Tensor,
                       config: XGIRConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5: h' from h and lambda (both float[N,D]; noise from the per-unit mean and std of h),
    ``config.draws`` draws per image: (h' float[draws*N,D], labels long[draws*N])."""
    mean, std = h.mean(dim=0), h.std(dim=0)
    g = torch.Generator().manual_seed(config.seed)
    return noisy_features(h, lam, mean, std, config.draws, g, scale=config.noise_scale), labels.repeat(config.draws)


def fit_config_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, config: XGIRConfig) -> nn.Linear:
    """Step 6: a fresh softmax head trained on {features, labels} with the config's settings."""
    return fit_head(features, labels, num_classes, epochs=config.head_epochs, lr=config.lr,
                    batch_size=config.batch_size, weight_decay=config.weight_decay, seed=config.seed)


def fit_noisy_head(h: torch.Tensor, lam: torch.Tensor, labels: torch.Tensor, num_classes: int,
                   config: XGIRConfig) -> nn.Linear:
    """Steps 5-6: :func:`noisy_training_set` and a fresh softmax head trained on {h', y}."""
    return fit_config_head(*noisy_training_set(h, lam, labels, config), num_classes, config)


_QS = (0.05, 0.25, 0.5, 0.75, 0.95)


def response_quantiles(r: torch.Tensor) -> dict[str, list[float]]:
    """Per-unit 5/25/50/75/95 % quantiles of r float[N,D] (a strided sample of <= ~2000 rows),
    one sort for all five."""
    from xgir.correct.xgir_variants import content_memo

    sample = r[:: max(1, len(r) // 2000)]
    q = content_memo("r quantiles", sample, _QS,
                     lambda: torch.quantile(sample, torch.tensor(_QS, dtype=sample.dtype), dim=0))
    return {f"q{int(v * 100)}": q[i].tolist() for i, v in enumerate(_QS)}


def xgir_training_set(
    h: torch.Tensor, r: torch.Tensor, labels: torch.Tensor, config: XGIRConfig,
    empty_support: torch.Tensor | None = None, support_fraction: float = float("nan"),
    background: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, XGIRRecord]:
    """Steps 4-5 (or a variant's features): what the fresh head of :func:`retrain_head` is trained on.
    ``background`` float[N,D]: f of the background images, for the swap's ``context="background"``.

    Returns (features float[M,D], labels long[M], the record); M a multiple of N. Training a head
    on them with :func:`fit_config_head` (or many at once with :func:`xgir.train.heads.fit_heads`)
    is step 6.
    """
    from xgir.correct.xgir_variants import uses_variant, variant_training_set

    if h.shape != r.shape:
        raise XgirError(f"features {tuple(h.shape)} and responses {tuple(r.shape)} differ in shape")
    from xgir.resources import check_memory

    check_memory(3 * 4 * (config.draws + 1) * h.numel(), f"{config.draws} draws of {h.shape[0]} images' features",
                 "lower draws")
    if uses_variant(config):
        return variant_training_set(h, r, labels, config, empty_support, support_fraction, background)
    delta2 = delta2_per_unit(r, config)
    lam = interventional_lambda(r, delta2)
    if empty_support is not None:
        lam[empty_support] = 0.0
    feats, y = noisy_training_set(h, lam, labels, config)
    record = XGIRRecord(
        config=asdict(config),
        delta2_used=delta2.tolist(),
        frac_units_randomised=float(lam.mean()),
        frac_units_fully_randomised=float((lam >= 1).float().mean()),
        frac_randomised_per_class={int(c): float(lam[labels == c].mean()) for c in torch.unique(labels)},
        r_quantiles=response_quantiles(r),
        support_fraction=support_fraction,
        empty_supports=int(empty_support.sum()) if empty_support is not None else 0,
    )
    return feats, y, record


def retrain_head(
    h: torch.Tensor, r: torch.Tensor, labels: torch.Tensor, num_classes: int, config: XGIRConfig, *,
    empty_support: torch.Tensor | None = None, support_fraction: float = float("nan"),
    background: torch.Tensor | None = None,
) -> tuple[nn.Linear, XGIRRecord]:
    """Steps 4-6: lambda from r, noisy features (or a variant's features), a fresh head trained on them.

    Args:
        h: features float[N,D]; r: responses float[N,D]; labels long[N].
        empty_support: bool[N] images whose support was empty (they keep h: lambda = 0).
        background: f of the background images float[N,D] (the swap's ``context="background"``).
    """
    feats, y, record = xgir_training_set(h, r, labels, config, empty_support, support_fraction, background)
    return fit_config_head(feats, y, num_classes, config), record


def check_labels(labels: object, n: int, num_classes: int) -> None:
    """XgirError unless ``labels`` is a long tensor [n] of class indices 0..num_classes-1."""
    if not isinstance(labels, torch.Tensor) or labels.shape != (n,):
        shape = tuple(getattr(labels, "shape", ())) or type(labels).__name__
        raise XgirError(f"labels must be a tensor [N] = [{n}] of class indices, got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        kind = str(labels.dtype).removeprefix("torch.")
        raise XgirError(f"labels must be whole class indices (torch.long), got {kind}")
    if n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise XgirError(f"labels must lie in 0..{num_classes - 1} (the head's classes), got {int(labels.min())}.."
                        f"{int(labels.max())}")


def frozen_copy(model: nn.Module, head: str = "fc") -> tuple[nn.Module, FeatureExtractor, nn.Linear]:
    """A deep copy of ``model`` in eval mode with every parameter frozen, and its split."""
    new_model = copy.deepcopy(model).eval()
    for p in new_model.parameters():
        p.requires_grad_(False)
    features, linear = split(new_model, head)
    return new_model, features, linear


def xgir_retrain(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    support: torch.Tensor,
    config: XGIRConfig,
    *,
    head: str = "fc",
    features_h: torch.Tensor | None = None,
    data_mean: torch.Tensor | None = None,
) -> tuple[nn.Module, XGIRRecord]:
    """Retrain the head of ``model`` with XGIR; returns (a new model, the record).

    Args:
        model: a classifier whose last step is the linear layer ``head``; not modified.
        images: training images float[N,C,H,W]; labels long[N].
        support: bool[N,H,W] the core region per image (from :func:`support_from_heatmaps`,
            or ground-truth masks, or random masks for a control).
        features_h: the frozen features h of ``images`` (computed when None).
        data_mean: mean image float[C,H,W] (for ``empty="data-mean"``; computed when None).
    """
    check_images(images, model, finite=True)
    if len(images) == 0:
        raise XgirError("no images to retrain the head on (the batch is empty)")
    if not isinstance(support, torch.Tensor) or support.shape != (images.shape[0], *images.shape[-2:]):
        raise XgirError(f"support must be [N,H,W] = {(images.shape[0], *images.shape[-2:])}, "
                        f"got {tuple(getattr(support, 'shape', ())) or type(support).__name__}")
    new_model, features, linear = frozen_copy(model, head)
    check_labels(labels, len(images), linear.out_features)
    device = model_device(new_model)
    h = features_h if features_h is not None else extract_features(features, images)
    if data_mean is None and empty_name(config.empty) == "data-mean":
        data_mean = images.mean(dim=0)
    x0 = empty_images(images, config.empty, data_mean=data_mean, blur_sigma=config.blur_sigma)
    r = unit_responses(features, images.to(device), support.to(device), x0.to(device),
                       response=config.response).cpu()
    empty = ~support.flatten(1).any(dim=1)
    new_head, record = retrain_head(h, r, labels, linear.out_features, config, empty_support=empty,
                                    support_fraction=float(support.float().mean()))
    with torch.no_grad():
        linear.weight.copy_(new_head.weight)
        linear.bias.copy_(new_head.bias)
    return new_model, record
