"""Variants of XGIR (not in the method as first defined, docs/correct.md; each labelled as a variant)
and sources of the core.

The note's rule (:mod:`xgir.correct.xgir`) reads r = f(x') - f(x0) as "how much the unit
responds to the core" with 0 as "no response". That holds for non-negative features next
to an empty x0 the network has seen; an ImageNet network's pooled features are signed
(batch norm, swish) and a black x0 is far from its data, so r < 0 for most units and every
quantile of r is clamped to 1e-6. The variants below, selected by :class:`XGIRConfig`
fields (``variant``, ``floor``, ``noise``, ``basis``, ``response="core-vs-whole"``):

- **signed floor** (``floor=q``): lambda = (delta2 - min(delta2, r)) / (delta2 - r_lo), r_lo the
  per-unit q-quantile of r: the unit's own "no response" level replaces 0. With r >= 0 and
  r_lo = 0 it is the note's formula. Clipped to [0, 1].
- **core vs whole** (``response="core-vs-whole"``): r = f(x') - f(x), the change of the unit
  when the context is replaced by x0: a unit that the context drives drops.
- **empirical noise** (``noise="empirical"``): eps(u) is the unit's value in another training
  image drawn at random (for each image and unit), not a Gaussian.
- **decorrelated basis** (``basis="pca"`` / ``"whiten"``): the rule runs on the coordinates
  z = (h - mu) V (divided by sqrt(eigenvalue) for whiten) of the principal axes of h over the
  training set, and h' = z' V^T + mu: one direction can carry a factor that many units share.
- **context swap** (``variant="swap"``): h'_i = f(core_i) + ctx_j for a random other image j,
  as if features added up: the core's features plus another image's context contribution,
  labelled y_i. ``context="remainder"``: ctx_j = h_j - f(core_j) (from r = f(core) - f(x0)
  with one x0 for all images, h'_i = r_i + h_j - r_j); ``context="background"``:
  ctx_j = f(x_j (1 - s'_j) + x0 s'_j) - f(x0), the partner's image with the top
  ``context_fraction`` of its map blanked out (s', larger than the core's support, so that
  the part of j's object that the core missed is not carried under i's label: an imprecise
  core otherwise turns into label noise). ``partner="other-class"`` draws j among the images
  of another class (each context then meets a label it was not seen with). The head is
  trained on {h} and ``draws`` swaps.

Sources of the core (heatmaps float[N,u,v] at the last spatial stage, from the maps M that a
global-average-pooled linear head reads, so CAM = Grad-CAM there):
:func:`class_cam` (the biased head's map of the true class, the note's IOX),
:func:`pretrained_cam` (the pretrained network's own head, probability-weighted over its top-k
classes: it sees objects, not the new head's shortcut), :func:`novelty_map` (class-agnostic:
how far each cell's features lie from the image's median cell, the odd one out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.train.erm import model_device

if TYPE_CHECKING:
    from xgir.correct.xgir import XGIRConfig, XGIRRecord
    from xgir.explain.clusters import ConfusionTree

VARIANTS = ("note", "swap")
NOISES = ("gaussian", "empirical")
BASES = ("units", "pca", "whiten")
CORES = ("explainer", "pretrained", "novelty")
PARTNERS = ("any", "other-class")
CONTEXTS = ("remainder", "background")


def validate_variant_fields(config: XGIRConfig) -> None:
    """XgirError for a bad variant field of ``config`` (called by XGIRConfig.__post_init__)."""
    if config.variant not in VARIANTS:
        raise XgirError(f"variant must be one of {', '.join(VARIANTS)}, got '{config.variant}'")
    if config.noise not in NOISES:
        raise XgirError(f"noise must be one of {', '.join(NOISES)}, got '{config.noise}'")
    if config.basis not in BASES:
        raise XgirError(f"basis must be one of {', '.join(BASES)}, got '{config.basis}'")
    if config.core not in CORES:
        raise XgirError(f"core must be one of {', '.join(CORES)}, got '{config.core}'")
    if config.floor is not None and not 0 <= config.floor < 1:
        raise XgirError(f"floor (a quantile of r) must be in [0, 1), got {config.floor}")
    if config.core_model is not None and (config.core != "pretrained" or not str(config.core_model).strip()):
        raise XgirError(f"core_model names the network whose own head gives the core map: set core: pretrained "
                        f"and a model spec (e.g. efficientnet-lite0), got core {config.core!r}, core_model "
                        f"{config.core_model!r}")
    if config.top_k < 1:
        raise XgirError(f"top_k must be >= 1, got {config.top_k}")
    if config.partner not in PARTNERS:
        raise XgirError(f"partner must be one of {', '.join(PARTNERS)}, got '{config.partner}'")
    if config.context not in CONTEXTS:
        raise XgirError(f"context must be one of {', '.join(CONTEXTS)}, got '{config.context}'")
    for name in ("support_fraction", "context_fraction"):
        v = getattr(config, name)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1):
            raise XgirError(f"{name} is a share of the image's pixels in (0, 1), got {v!r}")
    if config.variant != "swap" and (config.partner != "any" or config.context != "remainder"):
        raise XgirError("partner and context are settings of the context swap: set variant: swap")


def uses_variant(config: XGIRConfig) -> bool:
    """True when ``config`` asks for anything beyond the note's rule."""
    return (config.variant != "note" or config.floor is not None or config.noise != "gaussian"
            or config.basis != "units")


# ---------------------------------------------------------------- maps and cores
@torch.no_grad()
def pooled_maps(model: nn.Module, images: torch.Tensor, pool: str, *, batch_size: int = 64,
                dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of the global pooling module ``pool`` (the maps M float[N,D,u,v], stored in
    ``dtype``) and the features h = mean of M over space, float[N,D] (float32), in one pass."""
    from xgir.models.split import get_module

    module = get_module(model, pool)
    device = model_device(model)
    grabbed: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: grabbed.append(args[0].detach()))
    maps, feats = [], []
    try:
        for i in range(0, len(images), batch_size):
            grabbed.clear()
            model(images[i : i + batch_size].to(device))
            m = grabbed[0].float()
            feats.append(m.mean(dim=(2, 3)).cpu())
            maps.append(m.to(dtype).cpu())
    finally:
        handle.remove()
    return torch.cat(feats), torch.cat(maps)


def cam_from_weights(maps: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """relu(sum_d w[n,d] M[n,d]): maps float[N,D,u,v], per-image weights w float[N,D] -> float[N,u,v].
    For a linear head on global-average-pooled M this equals Grad-CAM at M (up to 1/(uv))."""
    return torch.einsum("ndij,nd->nij", maps.float(), w.float()).clamp(min=0)


def class_cam(maps: torch.Tensor, head: nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """The head's map of class ``labels`` long[N] (IOX of a linear head): float[N,u,v]."""
    return cam_from_weights(maps, head.weight.detach()[labels])


def pretrained_cam(maps: torch.Tensor, head: nn.Linear, *, k: int = 5) -> torch.Tensor:
    """The pretrained head's map of its own top-``k`` classes, weighted by their softmax
    probability (no label used): float[N,u,v]."""
    w = head.weight.detach().float()
    logits = head(maps.float().mean(dim=(2, 3)))
    prob, top = logits.softmax(dim=1).topk(k, dim=1)
    weights = torch.einsum("nk,nkd->nd", prob, w[top])
    return cam_from_weights(maps, weights)


def cwox_cluster_cam(maps: torch.Tensor, head: nn.Linear, tree: ConfusionTree, *, level: float | None = None,
                     k: int = 5, mass: float | None = None) -> torch.Tensor:
    """CWOX's cluster map of the head's top cluster, from the maps M float[N,D,u,v] that a
    global-average-pooled linear ``head`` reads (no label used): float[N,u,v].

    The head's top-``k`` classes (or the smallest set past ``mass``) are cut into confusion
    clusters by ``tree`` at ``level``; each cluster's map is the CAM of its generalised logit
    logsumexp_{c in C} z_c (the head's rows weighted by the softmax within C: Grad-CAM at M, up
    to the factor 1/(uv)), and the top cluster's map (the most probable) is contrasted with the
    others, H = clip((m-1) G(C_1) - sum_{j>1} G(C_j), 0), as :func:`xgir.explain.cwox.cwox` does.
    A bird photograph's top classes split into a bird cluster and a scene cluster (lakeside,
    dock...): the contrast keeps the bird."""
    from xgir.explain.clusters import top_label_sets
    from xgir.explain.cwox import contrast_clusters

    if level is None:
        level = tree.default_level
    w = head.weight.detach().float()
    logits = head(maps.float().mean(dim=(2, 3)))
    probs = logits.softmax(dim=1)
    rows = top_label_sets(probs, k=k, mass=mass)
    n, d = maps.shape[:2]
    weights = torch.zeros(n, k, d)
    valid = torch.zeros(n, k, dtype=torch.bool)
    for i, labels in enumerate(rows):
        clusters = sorted(tree.partition(labels, level), key=lambda c: -float(probs[i, list(c)].sum()))
        for j, cluster in enumerate(clusters[:k]):
            idx = torch.tensor(cluster)
            weights[i, j] = logits[i, idx].softmax(0) @ w[idx]
            valid[i, j] = True
    g = torch.einsum("ndij,nkd->nkij", maps.float(), weights).clamp(min=0)
    return contrast_clusters(g, valid)[:, 0]


def novelty_map(maps: torch.Tensor) -> torch.Tensor:
    """Class-agnostic saliency: the distance of each cell's feature vector (units standardised
    over the image's cells) to the image's median cell, float[N,u,v]. The background fills
    most cells, so the cells that differ from the median hold the odd one out (the object)."""
    m = maps.float().flatten(2)  # [N,D,P]
    z = (m - m.mean(dim=2, keepdim=True)) / m.std(dim=2, keepdim=True).clamp(min=1e-3)
    med = z.median(dim=2, keepdim=True).values
    dist = (z - med).norm(dim=1)
    return dist.view(maps.shape[0], *maps.shape[2:])


def support_precision(support: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of the support's pixels on the object: bool[N,H,W] twice -> float."""
    return float((support & masks).sum() / support.sum().clamp(min=1))


# ---------------------------------------------------------------- the intervention
def signed_lambda(r: torch.Tensor, delta2: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """lambda = (delta2 - min(delta2, r)) / (delta2 - floor), clipped to [0, 1]: r float[N,D],
    delta2 and floor float[D] (delta2 > floor). floor = 0 gives the note's formula."""
    d, lo = delta2.to(r), floor.to(r)
    if bool((d <= lo).any()):
        raise XgirError("delta2 must lie above the floor for every unit (choose a higher delta2 quantile)")
    return ((d - torch.minimum(d.expand_as(r), r)) / (d - lo)).clamp(0.0, 1.0)


_MEMO: dict[tuple[Any, ...], Any] = {}


def content_memo(tag: str, tensor: torch.Tensor, extra: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` remembered by the content (a hash) of ``tensor``, ``tag`` and ``extra`` (the
    last 32 results): the rows of a benchmark that share one r sort it once. Do not modify
    what it returns."""
    from xgir.io import fingerprint

    key = (tag, fingerprint(tensor), extra)
    if key not in _MEMO:
        if len(_MEMO) >= 32:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = compute()
    return _MEMO[key]


def thresholds(r: torch.Tensor, config: XGIRConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta2, floor) per unit, float[D] each, for the signed rule. delta2: absolute, pooled
    quantile or per-unit quantile as in the note (no clamp at 1e-6); floor: the per-unit
    ``config.floor`` quantile of r (or 0)."""
    d = r.shape[1]
    if config.delta2_mode == "absolute":
        delta2 = torch.full((d,), float(config.delta2))
    elif config.delta2_mode == "unit-quantile":
        delta2 = torch.quantile(r, config.delta2, dim=0)
    else:
        pooled = r.flatten()
        if pooled.numel() > 1_000_000:
            pooled = pooled[:: pooled.numel() // 1_000_000 + 1]
        delta2 = torch.quantile(pooled, config.delta2).expand(d).clone()
    floor = torch.quantile(r, config.floor, dim=0) if config.floor is not None else torch.zeros(d)
    return delta2, torch.minimum(floor, delta2 - 1e-6)


def decorrelating_basis(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu float[D], B float[D,D]) with z = (h - mu) B the coordinates on the principal axes of h
    (``"pca"``), divided by their standard deviation (``"whiten"``), or B = I (``"units"``)."""
    mu, b, _ = _basis(h, kind)
    return mu, b


_EIGH: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the last h's eigendecomposition (pca and whiten share it)


def _basis(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`decorrelating_basis` and the inverse of B (h = z B^-1 + mu): V^T for PCA, diag(sd) V^T
    for whitening (V orthogonal), so no pseudo-inverse of a [D,D] matrix is needed."""
    from xgir.io import fingerprint

    mu = h.mean(dim=0)
    if kind == "units":
        eye = torch.eye(h.shape[1])
        return mu, eye, eye
    key = fingerprint(h)
    if key not in _EIGH:
        _EIGH.clear()
        cov = torch.cov((h - mu).T.double())
        _EIGH[key] = torch.linalg.eigh(cov)
    evals, evecs = _EIGH[key]
    b = evecs.flip(1)
    if kind == "whiten":
        sd = evals.flip(0).clamp(min=1e-8 * float(evals.max())).sqrt()
        return mu, (b / sd).float(), (b.T * sd[:, None]).float()
    return mu, b.float(), b.T.float()


def empirical_noise(h: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    """eps[k,n,u] = h[j,u] for a random training image j per (draw, image, unit): float[draws,N,D]."""
    n, d = h.shape
    idx = torch.randint(n, (draws, n, d), generator=generator)
    return h.T.gather(1, idx.permute(2, 0, 1).reshape(d, -1)).T.reshape(draws, n, d)


def swap_partners(labels: torch.Tensor, partner: str, generator: torch.Generator) -> torch.Tensor:
    """One partner j per image, long[N]: a random permutation (``"any"``), or for each image a
    random image of another class (``"other-class"``, drawn with replacement)."""
    n = len(labels)
    if partner == "any":
        return torch.randperm(n, generator=generator)
    j = torch.empty(n, dtype=torch.long)
    for c in torch.unique(labels).tolist():
        mine, others = torch.nonzero(labels == c).flatten(), torch.nonzero(labels != c).flatten()
        if not len(others):
            raise XgirError("partner: other-class needs images of at least two classes")
        j[mine] = others[torch.randint(len(others), (len(mine),), generator=generator)]
    return j


def swap_features(h: torch.Tensor, r: torch.Tensor, draws: int, generator: torch.Generator, *,
                  labels: torch.Tensor | None = None, partner: str = "any",
                  background: torch.Tensor | None = None) -> torch.Tensor:
    """h'_i = r_i + ctx_j for partners j (:func:`swap_partners`, one set per draw): ctx_j =
    h_j - r_j (the remainder), or ``background[j]`` = f(x_j (1 - s'_j) + x0 s'_j) (then h'_i =
    f(core_i) + f(background_j) - f(x0)). h, r (and background) float[N,D] -> float[draws*N,D]
    (draw-major)."""
    if partner != "any" and labels is None:
        raise XgirError("swap_features: partner other-class needs the labels")
    ctx = h - r if background is None else background
    out = []
    for _ in range(draws):
        j = swap_partners(labels if labels is not None else torch.zeros(len(h)), partner, generator)
        out.append(r + ctx[j])
    return torch.cat(out)


def variant_features(h: torch.Tensor, r: torch.Tensor, config: XGIRConfig, generator: torch.Generator, *,
                     empty_support: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                     background: torch.Tensor | None = None) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """The training features of a variant: (features float[M,D], M // N copies of the labels,
    stats). Images with an empty support keep h. ``background`` float[N,D]: f of the partners'
    background images (``context="background"``)."""
    keep = empty_support if empty_support is not None else torch.zeros(len(h), dtype=torch.bool)
    if config.variant == "swap":
        if (config.context == "background") != (background is not None):
            raise XgirError("context: background needs the features of the background images (and only it does)")
        r_used = torch.where(keep[:, None], h, r)  # no core: the image keeps all of h
        swaps = swap_features(h, r_used, config.draws, generator, labels=labels, partner=config.partner,
                              background=background)
        return torch.cat([h, swaps]), config.draws + 1, {
            "frac_units_randomised": float("nan"), "frac_units_fully_randomised": float("nan"),
            "delta2_used": [], "floor_used": []}
    mu, b, b_inv = _basis(h, config.basis)
    z, rz = (h - mu) @ b, r @ b
    delta2, floor = content_memo("thresholds", rz, (config.delta2_mode, config.delta2, config.floor),
                                 lambda: thresholds(rz, config))
    lam = signed_lambda(rz, delta2, floor)
    lam[keep] = 0.0
    if config.noise == "empirical":
        eps = empirical_noise(z, config.draws, generator)
        eps = z.mean(0) + config.noise_scale * (eps - z.mean(0))
    else:
        eps = z.mean(0) + config.noise_scale * z.std(0) * torch.randn(config.draws, *z.shape, generator=generator)
    z_new = ((1 - lam) * z + lam * eps).reshape(-1, z.shape[1])
    h_new = z_new @ b_inv + mu if config.basis != "units" else z_new + mu
    return h_new, config.draws, {
        "frac_units_randomised": float(lam.mean()),
        "frac_units_fully_randomised": float((lam >= 1).float().mean()),
        "delta2_used": delta2.tolist(), "floor_used": floor.tolist()}


def variant_training_set(
    h: torch.Tensor, r: torch.Tensor, labels: torch.Tensor, config: XGIRConfig,
    empty_support: torch.Tensor | None = None, support_fraction: float = float("nan"),
    background: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, XGIRRecord]:
    """:func:`xgir.correct.xgir.xgir_training_set` for the variants: h, r (and ``background``)
    float[N,D], labels long[N] -> (features float[M,D], labels long[M], record)."""
    from xgir.correct.xgir import XGIRRecord, response_quantiles

    if h.shape != r.shape or (background is not None and background.shape != h.shape):
        raise XgirError(f"features {tuple(h.shape)}, responses {tuple(r.shape)} and background features "
                        f"{None if background is None else tuple(background.shape)} differ in shape")
    g = torch.Generator().manual_seed(config.seed)
    feats, copies, stats = variant_features(h, r, config, g, empty_support=empty_support, labels=labels,
                                            background=background)
    record = XGIRRecord(
        config=asdict(config), delta2_used=stats["delta2_used"],
        frac_units_randomised=stats["frac_units_randomised"],
        frac_units_fully_randomised=stats["frac_units_fully_randomised"],
        frac_randomised_per_class={},
        r_quantiles=response_quantiles(r),
        support_fraction=support_fraction,
        empty_supports=int(empty_support.sum()) if empty_support is not None else 0,
    )
    return feats, labels.repeat(copies), record


def core_heatmaps(kind: str, model: nn.Module, x: torch.Tensor, layer: str, *, top_k: int = 5) -> torch.Tensor:
    """Label-free core maps float[N,u,v] at ``layer`` for ``xgir correct`` (``XGIRConfig.core``):
    ``"pretrained"``: Grad-CAM of the model's own top-``top_k`` classes, weighted by their softmax
    probability (the pretrained head's view when the model is the pretrained network);
    ``"novelty"``: :func:`novelty_map` of the layer's activations."""
    from xgir.explain._hooks import LayerCapture
    from xgir.explain.gradcam import grad_cam_layers
    from xgir.models.split import get_module

    if kind == "novelty":
        module = get_module(model, layer)
        with torch.no_grad(), LayerCapture(module) as cap:
            model(x)
            act = cap.get(module)
        if act.ndim != 4:
            raise XgirError(f"the novelty core needs a layer with output [N,C,u,v]; '{layer}' gives {tuple(act.shape)}")
        return novelty_map(act.detach())
    if kind != "pretrained":
        raise XgirError(f"unknown core source '{kind}'; choose explainer, pretrained or novelty")

    def targets(logits: torch.Tensor) -> list[list[torch.Tensor]]:
        prob, top = logits.softmax(dim=1).topk(min(top_k, logits.shape[1]), dim=1)
        w = torch.zeros_like(logits).scatter(1, top, prob)
        return [[row] for row in w.cpu()]

    _, (maps,) = grad_cam_layers(model, x, [(layer, targets)], upsample=False)
    return maps[:, 0].detach()
