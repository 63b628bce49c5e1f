"""CWOX-2s: contrastive whole-output explanation with Grad-CAM as base explainer.

For each image: take its top classes (the smallest set whose probabilities sum past
``mass``, at most ``k``), partition them into label confusion clusters C_1..C_m
(:class:`xgir.explain.clusters.ConfusionTree`), then

- cluster maps G(C_i): Grad-CAM of the generalised logit z_{C_i} = logsumexp_{c in C_i} z_c
  at a deep layer, contrasted: H(C_i) = clip((m-1) G(C_i) - sum_{j!=i} G(C_j), 0)
  (H = G when m = 1);
- class maps G(c) at a shallower layer for the classes of clusters with n > 1 classes,
  contrasted within the cluster on the support of H(C_i):
  clip(((n-1) G(c) - sum_{c' in C_i, c' != c} G(c')) * 1[H(C_i) > percentile(H(C_i), delta)], 0).

Both layers' maps come from ONE forward pass and one batched Grad-CAM per layer for all
clusters / classes of the batch (lists padded to the longest image, padding masked out).
Maps are upsampled to the input size. The model's mode is not changed (call eval()).

Registered as ``"cwox"``: ``explainer(model, x, targets)`` returns the contrasted maps
H of the T given targets (each target, e.g. a cluster tuple, plays a cluster C_i), i.e.
the cluster level of CWOX for clusters chosen by the caller. :func:`cwox` runs the
whole method and returns a :class:`CwoxResult`; :func:`plot_cwox` draws it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import check_images, default_layer, default_layers
from xgir.explain.clusters import ConfusionTree, top_label_sets
from xgir.explain.gradcam import grad_cam, grad_cam_layers
from xgir.explain.targets import Targets

Partition = ConfusionTree | Callable[[list[int]], Sequence[Sequence[int]]] | None


def contrast_clusters(maps: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """H(C_i) = clip((m-1) G(C_i) - sum_{j!=i} G(C_j), 0) over the valid maps of each image.

    Args:
        maps: G float[N,T,H,W].
        valid: bool[N,T] which maps are real (default all); m = valid count per image.
            Images with m = 1 keep H = G. Invalid entries come back as zeros.
    """
    if valid is None:
        valid = torch.ones(maps.shape[:2], dtype=torch.bool, device=maps.device)
    v = valid.to(maps.dtype)[..., None, None]
    g = maps * v
    m = v.sum(dim=1, keepdim=True)
    others = g.sum(dim=1, keepdim=True) - g
    h = ((m - 1) * g - others).clamp(min=0)
    h = torch.where(m == 1, g, h)
    return h * v


def contrast_within_clusters(class_maps: torch.Tensor, group: torch.Tensor,
                             cluster_maps: torch.Tensor, *, delta: float = 50.0) -> torch.Tensor:
    """Class maps contrasted within their cluster on the delta-percentile support of H(C_i).

    Args:
        class_maps: G(c) float[N,S,H,W].
        group: long[N,S] index of each class's cluster in ``cluster_maps`` (-1: padding).
        cluster_maps: contrasted H float[N,M,H,W].
        delta: percentile in [0, 100] (linear interpolation, as numpy.percentile).

    Returns:
        float[N,S,H,W]: clip(((n-1) G(c) - sum_{c' != c in its cluster} G(c')) * support, 0),
        zero for padding. n = size of the class's cluster among the valid entries.
    """
    if not 0.0 <= delta <= 100.0:
        raise XgirError(f"delta is a percentile in [0, 100], got {delta}")
    n_img, s = group.shape
    m = cluster_maps.shape[1]
    valid = group >= 0
    onehot = torch.nn.functional.one_hot(group.clamp(min=0), m).to(class_maps.dtype)
    onehot = onehot * valid[..., None].to(class_maps.dtype)  # [N,S,M]
    sums = torch.einsum("nsm,nshw->nmhw", onehot, class_maps)  # per-cluster sum of G(c)
    sizes = onehot.sum(dim=1)  # [N,M]
    thr = torch.quantile(cluster_maps.flatten(2).float(), delta / 100.0, dim=-1)  # [N,M]
    support = (cluster_maps > thr.to(cluster_maps.dtype)[..., None, None]).to(class_maps.dtype)
    own_sum = torch.einsum("nsm,nmhw->nshw", onehot, sums)
    own_size = torch.einsum("nsm,nm->ns", onehot, sizes)[..., None, None]
    own_support = torch.einsum("nsm,nmhw->nshw", onehot, support)
    contrasted = ((own_size - 1) * class_maps - (own_sum - class_maps)) * own_support
    return contrasted.clamp(min=0) * valid[..., None, None].to(class_maps.dtype)


@dataclass
class CwoxImage:
    """CWOX-2s explanation of one image (maps float[...,H,W] on the CPU).

    Attributes:
        classes: top classes, most probable first; probs: their probabilities.
        clusters: the partition of ``classes``, ordered by cluster probability (descending),
            classes inside ordered by probability.
        cluster_probs: summed probability of each cluster.
        raw_cluster_maps: G(C_i) float[m,H,W]; cluster_maps: contrasted H(C_i) float[m,H,W].
        raw_class_maps / class_maps: per cluster, float[n_i,H,W] (G(c) / contrasted) for
            clusters with n_i > 1 classes, None for single-class clusters.
    """

    classes: list[int]
    probs: list[float]
    clusters: list[tuple[int, ...]]
    cluster_probs: list[float]
    raw_cluster_maps: torch.Tensor
    cluster_maps: torch.Tensor
    raw_class_maps: list[torch.Tensor | None]
    class_maps: list[torch.Tensor | None]


@dataclass
class CwoxResult:
    """CWOX-2s explanations of a batch: ``result[i]`` is a :class:`CwoxImage`."""

    images: list[CwoxImage]
    deep_layer: str
    shallow_layer: str
    delta: float
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> CwoxImage:
        return self.images[i]

    def summary(self) -> list[dict[str, Any]]:
        """JSON-able per-image clusters and probabilities."""
        return [
            {"classes": im.classes, "probs": im.probs, "clusters": [list(c) for c in im.clusters],
             "cluster_probs": im.cluster_probs}
            for im in self.images
        ]


def _partition_fn(partition: Partition,
                  level: float) -> Callable[[list[int]], list[tuple[int, ...]]]:
    if partition is None:
        return lambda labels: [(c,) for c in labels]
    if isinstance(partition, ConfusionTree):
        return lambda labels: partition.partition(labels, level)
    if callable(partition):
        return lambda labels: [tuple(int(c) for c in g) for g in partition(labels)]
    raise XgirError("partition must be a ConfusionTree, a callable labels -> clusters, or None")


def _cluster_targets(rows: list[list[tuple[int, ...]]], k: int, device: torch.device) -> Targets:
    """Cluster targets (padded by repeating the first cluster) as a Targets [N,T,K]."""
    n, t = len(rows), max(len(r) for r in rows)
    members = torch.zeros(n, t, k, dtype=torch.bool)
    for i, row in enumerate(rows):
        for j in range(t):
            members[i, j, list(row[j] if j < len(row) else row[0])] = True
    return Targets(torch.zeros(n, t, k), members, torch.ones(n, t, dtype=torch.bool)).to(device)


def cwox(
    model: nn.Module,
    x: torch.Tensor,
    partition: Partition = None,
    *,
    level: float | None = None,
    deep_layer: str | None = None,
    shallow_layer: str | None = None,
    k: int = 5,
    mass: float | None = 0.95,
    delta: float = 50.0,
    relu: bool = True,
) -> CwoxResult:
    """CWOX-2s with Grad-CAM on a batch ``x`` float[N,C,H,W].

    Args:
        partition: a :class:`ConfusionTree` (cut at ``level``), a callable mapping an image's
            top labels to clusters, or None (every class its own cluster).
        level: the tree's cut level (None: ``partition.default_level``: 0.5 for a
            co-occurrence tree, 0.8 for a head-weight tree).
        deep_layer / shallow_layer: Grad-CAM layers of cluster / class maps (default
            :func:`xgir.explain._hooks.default_layers`).
        k, mass: top classes = smallest set with probability > mass, at most k (mass None: k).
        delta: percentile of H(C_i) giving the support of the class maps.
        relu: ReLU on the Grad-CAM maps before contrasting.
    """
    check_images(x)
    if deep_layer is None or shallow_layer is None:
        d, s = default_layers(model, x)
        deep_layer, shallow_layer = deep_layer or d, shallow_layer or s
    if level is None:
        level = partition.default_level if isinstance(partition, ConfusionTree) else 0.5
    part = _partition_fn(partition, level)
    n = x.shape[0]
    plan: dict[str, Any] = {}

    def cluster_targets(logits: torch.Tensor) -> Targets:
        probs = torch.softmax(logits.float(), dim=1)
        top = top_label_sets(probs, k=k, mass=mass)
        p_cpu = probs.cpu()
        plan["probs"] = p_cpu
        rows, cprobs = [], []
        for i, labels in enumerate(top):
            groups = part(labels)
            if sorted(c for g in groups for c in g) != sorted(labels):
                raise XgirError(f"the partition {groups} does not cover the top labels {labels} "
                                "exactly once")
            ordered = [tuple(sorted(g, key=lambda c: -float(p_cpu[i, c]))) for g in groups]
            mass_of = [float(p_cpu[i, list(g)].sum()) for g in ordered]
            order = sorted(range(len(ordered)), key=lambda j: -mass_of[j])
            rows.append([ordered[j] for j in order])
            cprobs.append([mass_of[j] for j in order])
        plan["top"], plan["clusters"], plan["cluster_probs"] = top, rows, cprobs
        return _cluster_targets(rows, logits.shape[1], logits.device)

    def class_targets(logits: torch.Tensor) -> torch.Tensor:
        members = [[(c, j) for j, g in enumerate(r) if len(g) > 1 for c in g]
                   for r in plan["clusters"]]
        plan["members"] = members
        s = max(1, max(len(m) for m in members))
        idx = torch.zeros(n, s, dtype=torch.long)
        for i, mem in enumerate(members):
            idx[i, : len(mem)] = torch.tensor([c for c, _ in mem], dtype=torch.long)
        return idx.to(logits.device)

    _, (g_clusters, g_classes) = grad_cam_layers(
        model, x, [(deep_layer, cluster_targets), (shallow_layer, class_targets)], relu=relu
    )
    rows = plan["clusters"]
    valid = torch.zeros(g_clusters.shape[:2], dtype=torch.bool)
    for i, r in enumerate(rows):
        valid[i, : len(r)] = True
    valid = valid.to(g_clusters.device)
    h = contrast_clusters(g_clusters, valid)
    group = torch.full(g_classes.shape[:2], -1, dtype=torch.long)
    for i, mem in enumerate(plan["members"]):
        for j, (_, ci) in enumerate(mem):
            group[i, j] = ci
    group = group.to(g_classes.device)
    hc = contrast_within_clusters(g_classes, group, h, delta=delta)

    images = []
    g_clusters, h, g_classes, hc = (t.detach().cpu() for t in (g_clusters, h, g_classes, hc))
    for i, r in enumerate(rows):
        raw_cls: list[torch.Tensor | None] = []
        con_cls: list[torch.Tensor | None] = []
        for j, g in enumerate(r):
            pos = [p for p, (_, ci) in enumerate(plan["members"][i]) if ci == j]
            raw_cls.append(g_classes[i, pos].clone() if len(g) > 1 else None)
            con_cls.append(hc[i, pos].clone() if len(g) > 1 else None)
        top = plan["top"][i]
        images.append(CwoxImage(
            classes=list(top), probs=[float(plan["probs"][i, c]) for c in top],
            clusters=list(r), cluster_probs=plan["cluster_probs"][i],
            raw_cluster_maps=g_clusters[i, : len(r)].clone(), cluster_maps=h[i, : len(r)].clone(),
            raw_class_maps=raw_cls, class_maps=con_cls,
        ))
    params = {"level": level, "k": k, "mass": mass, "relu": relu}
    return CwoxResult(images, str(deep_layer), str(shallow_layer), delta, params)


class CWOX:
    """Registry form of CWOX's cluster level: ``(model, x, targets) -> H float[N,T,H,W]``.

    Each of the T targets (a cluster tuple, a class, weighted logits) plays a cluster C_i:
    its Grad-CAM map G at ``layer`` is contrasted against the other targets of the same
    image, H_i = clip((T-1) G_i - sum_{j!=i} G_j, 0) (H = G when T = 1). Use :func:`cwox`
    for the full method (top classes, clusters from a tree, class maps).
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True) -> None:
        self.layer = layer
        self.relu = relu

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        check_images(x)
        layer = self.layer if self.layer is not None else default_layer(model, x)
        return contrast_clusters(grad_cam(model, x, targets, layer, relu=self.relu))


def _label(classes: Sequence[int], names: Sequence[str] | None) -> str:
    return ", ".join(names[c] if names is not None and c < len(names) else str(c) for c in classes)


def plot_cwox(result: CwoxResult | CwoxImage, image: torch.Tensor, path: str | os.PathLike,
              *, index: int = 0, class_names: Sequence[str] | None = None, alpha: float = 0.8) -> Path:
    """Draw a CWOX-2s explanation like the paper: the image, then one row per cluster with its
    contrastive cluster map followed (after a gap) by the contrastive maps of its classes.

    Maps are drawn by :mod:`xgir.viz` (non-negative: sequential colours from each map's 1st to
    99th percentile, opacity following the value, one colour bar); titles name the classes with
    their probabilities, wrapped to their panel, in a layout that does not overlap.

    Args:
        result: the result (``index`` picks the image) or one :class:`CwoxImage`.
        image: the explained image float[C,H,W] in [0, 1].
    """
    import matplotlib.pyplot as plt

    from xgir.io import save_figure
    from xgir.viz import attribution_rgb, bare, colorbar, show_image, wrap

    im = result[index] if isinstance(result, CwoxResult) else result
    if image.ndim != 3:
        raise XgirError(f"plot_cwox draws one image [C,H,W], got shape {tuple(image.shape)}")
    m = len(im.clusters)
    width = max([len(c) if len(c) > 1 else 0 for c in im.clusters] + [0])
    ncols = 2 + (width + 1 if width else 0)
    ratios = [1.0, 1.0] + ([0.15] + [1.0] * width if width else [])
    fig, axes = plt.subplots(m, ncols, figsize=(1.9 * sum(ratios), 2.15 * m + 0.7), squeeze=False,
                             gridspec_kw={"width_ratios": ratios}, layout="constrained")

    def overlay(ax: Any, heat: torch.Tensor, title: str) -> None:
        ax.imshow(attribution_rgb(image, heat, sign="positive", floor=True, alpha=alpha), interpolation="nearest")
        ax.set_title(wrap(title, 24, 4), fontsize=7)
        bare(ax)

    for i, cluster in enumerate(im.clusters):
        row = axes[i]
        for ax in row:
            ax.axis("off")
        if i == 0:
            row[0].axis("on")
            show_image(row[0], image)
            row[0].set_title("input", fontsize=7)
        row[1].axis("on")
        kind = "cluster" if len(cluster) > 1 else "class"
        overlay(row[1], im.cluster_maps[i], f"{kind} {{{_label(cluster, class_names)}}} p={im.cluster_probs[i]:.2f}")
        maps = im.class_maps[i]
        if maps is not None:
            for j, c in enumerate(cluster):
                ax = row[3 + j]
                ax.axis("on")
                p = im.probs[im.classes.index(c)]
                overlay(ax, maps[j], f"{_label([c], class_names)} p={p:.2f}")
    colorbar(fig, axes.ravel().tolist(), "positive", True)
    fig.suptitle(wrap("CWOX-2s (rows: clusters against each other; right: a cluster's classes against each other)",
                      int(15 * fig.get_size_inches()[0]), 3), fontsize=8)
    return save_figure(fig, path)


def plot_tree(tree: ConfusionTree, path: str | os.PathLike, *, labels: Sequence[int] | None = None,
              level: float | None = None, title: str = "") -> Path:
    """Draw the confusion tree (restricted to ``labels``, e.g. the classes in some images' top
    labels; default all when K <= 60) as a dendrogram with class names, and the cut ``level``
    (default ``tree.default_level``) as a dashed line: classes joined left of it share a cluster.
    """
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import cophenet, dendrogram, linkage
    from scipy.spatial.distance import squareform

    from xgir.io import save_figure

    k = tree.num_classes
    if labels is None:
        if k > 60:
            raise XgirError(f"the tree has {k} classes; pass labels= (at most 60) to draw part of it")
        labels = list(range(k))
    labels = sorted({int(c) for c in labels})
    if any(not 0 <= c < k for c in labels):
        raise XgirError(f"labels out of range for a tree of {k} classes")
    level = tree.default_level if level is None else float(level)
    names = [tree.classes[c] for c in labels]
    fig, ax = plt.subplots(figsize=(6.0, 0.8 + 0.22 * len(labels)))
    if len(labels) >= 2:
        full = squareform(cophenet(tree.linkage)) if k > 1 else np.zeros((1, 1))
        sub = full[np.ix_(labels, labels)]  # ultrametric: average linkage rebuilds the same tree
        z = linkage(squareform(sub, checks=False), method="average")
        dendrogram(z, labels=names, orientation="left", ax=ax, color_threshold=level,
                   above_threshold_color="0.6", leaf_font_size=7)
        ax.axvline(level, color="k", linestyle="--", linewidth=0.8)
        ax.set_xlabel(f"merge distance (dashed: cut level {level:g})", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    else:
        ax.text(0.5, 0.5, names[0] if names else "(no classes)", ha="center", va="center")
        ax.axis("off")
    source = "head weights (cosine)" if tree.meta.get("source") == "head" else "top-label co-occurrence"
    ax.set_title(title or f"confusion tree from {source}", fontsize=8)
    return save_figure(fig, path)
