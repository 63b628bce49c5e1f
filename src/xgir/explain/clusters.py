"""Label confusion clusters: which classes the classifier confuses with each other.

From a model and a dataset: each image's top labels (the smallest set of classes
whose probabilities sum past ``mass``, at most ``k``), the label co-occurrence
similarity (Jaccard: images where both labels are top labels over images where
either is), and average-linkage agglomerative clustering of the labels on the
distance 1 - similarity (``scipy.cluster.hierarchy``; CWOX's hierarchical latent
tree model is replaced by this; see docs/explain.md, CWOX-2s).

A *level* is a cut height in [0, 1] on that distance: two labels share a cluster
at level ``t`` when their lowest common ancestor in the tree merged at distance
<= ``t`` (average similarity >= 1 - t). Level 0 keeps apart all labels that do not
always co-occur; level 1 puts every label in one cluster.

The tree is saved as JSON and reused (:meth:`ConfusionTree.save` / ``load``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.io import write_json

FORMAT = "xgir-confusion-tree"
DEFAULT_LEVEL = 0.5
"""Default cut of a co-occurrence tree (average Jaccard similarity >= 0.5)."""
HEAD_LEVEL = 0.8
"""Default cut of a head-weight tree (average cosine similarity >= 0.2): on EfficientNet-Lite0
it groups {tabby, tiger cat, Egyptian cat} and {espresso, cup, coffee mug}, 278 clusters of 2-7."""
VERSION = 1


def top_label_sets(probs: torch.Tensor, *, k: int = 5, mass: float | None = 0.95) -> list[list[int]]:
    """Each row's top labels, most probable first: the smallest prefix of the sorted classes
    whose probabilities sum past ``mass`` (``None``: always k), at most ``k``.

    Args:
        probs: float[N,K] class probabilities (rows sum to 1).

    >>> import torch
    >>> top_label_sets(torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.97, 0.01, 0.01, 0.01]]), k=3, mass=0.9)
    [[0, 1], [0]]
    """
    if probs.ndim != 2:
        raise XgirError(f"probabilities must be [N,K], got shape {tuple(probs.shape)}")
    if k < 1:
        raise XgirError(f"k must be at least 1, got {k}")
    k = min(k, probs.shape[1])
    top_p, top_i = probs.detach().float().topk(k, dim=1)
    if mass is None:
        sizes = torch.full((probs.shape[0],), k)
    else:
        if not 0 < mass <= 1:
            raise XgirError(f"mass must lie in (0, 1], got {mass}")
        before = top_p.cumsum(1) - top_p  # mass of the labels ranked above each one
        sizes = (before <= mass).sum(1).clamp(1, k)  # keep a label while the mass so far <= mass
    top_i, sizes = top_i.cpu(), sizes.cpu()
    return [top_i[i, : int(sizes[i])].tolist() for i in range(probs.shape[0])]


@torch.no_grad()
def model_top_labels(model: nn.Module, images: torch.Tensor, *, k: int = 5, mass: float | None = 0.95,
                     batch_size: int = 256) -> list[list[int]]:
    """:func:`top_label_sets` of the model's softmax outputs on ``images`` float[N,C,H,W]."""
    from xgir.models.inference import predict as predict_logits

    logits = predict_logits(model, images, batch_size=batch_size)
    return top_label_sets(torch.softmax(logits, dim=1), k=k, mass=mass)


def cooccurrence(top_labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Counts int[K,K]: [a,b] = number of sets holding both a and b ([a,a]: sets holding a)."""
    onehot = np.zeros((len(top_labels), num_classes), dtype=np.int64)
    for i, labels in enumerate(top_labels):
        for c in labels:
            if not 0 <= int(c) < num_classes:
                raise XgirError(f"label {c} out of range for {num_classes} classes")
            onehot[i, int(c)] = 1
    return onehot.T @ onehot


def jaccard_similarity(counts: np.ndarray) -> np.ndarray:
    """float[K,K] co-occurrence similarity |a and b| / |a or b| (0 when neither occurs; 1 on
    the diagonal)."""
    diag = np.diag(counts).astype(float)
    union = diag[:, None] + diag[None, :] - counts
    sim = np.divide(counts, union, out=np.zeros(counts.shape, dtype=float), where=union > 0)
    np.fill_diagonal(sim, 1.0)
    return sim


def _cophenetic_similarity(z: np.ndarray, k: int) -> np.ndarray:
    """float[K,K] 1 - the height at which each pair of labels merges in linkage ``z``."""
    from scipy.cluster.hierarchy import cophenet
    from scipy.spatial.distance import squareform

    if k < 2:
        return np.ones((k, k))
    sim = 1.0 - squareform(cophenet(z))
    np.fill_diagonal(sim, 1.0)
    return np.clip(sim, 0.0, 1.0)


def average_linkage(sim: np.ndarray) -> np.ndarray:
    """SciPy linkage matrix float[K-1,4] of average-linkage clustering on the distance
    ``clip(1 - sim, 0, 1)`` of a class similarity float[K,K] (empty for K = 1)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    if len(sim) == 1:
        return np.zeros((0, 4))
    dist = np.clip(1.0 - sim, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    return linkage(squareform(dist, checks=False), method="average")


class ConfusionTree:
    """Average-linkage tree of the labels on distance 1 - co-occurrence similarity.

    Attributes:
        linkage: float[K-1,4] scipy linkage matrix (merge i creates node K+i).
        similarity: float[K,K] Jaccard co-occurrence similarity.
        counts: int[K,K] co-occurrence counts.
        classes: class names.
        meta: how it was fitted (k, mass, number of images, ...).
    """

    def __init__(self, linkage: np.ndarray, similarity: np.ndarray, counts: np.ndarray,
                 classes: Sequence[str] | None = None, *, meta: dict[str, Any] | None = None) -> None:
        k = similarity.shape[0]
        self.linkage = np.asarray(linkage, dtype=float).reshape(max(k - 1, 0), 4)
        self.similarity = np.asarray(similarity, dtype=float)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.classes = list(classes) if classes else [str(i) for i in range(k)]
        self.meta = dict(meta or {})
        self._cut_cache: dict[float, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        return self.similarity.shape[0]

    @property
    def default_level(self) -> float:
        """The cut level to use when none is given: ``meta["level"]`` or 0.5."""
        return float(self.meta.get("level", DEFAULT_LEVEL))

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def from_top_labels(cls, top_labels: Sequence[Sequence[int]], num_classes: int,
                        classes: Sequence[str] | None = None, *,
                        meta: dict[str, Any] | None = None) -> ConfusionTree:
        """Build the tree from per-image top label sets.

        Classes 0 and 1 are confused with each other, 2 and 3 likewise:

        >>> tree = ConfusionTree.from_top_labels([[0, 1], [1, 0], [2, 3], [3, 2], [2]], num_classes=4)
        >>> tree.clusters(tree.default_level)
        [(0, 1), (2, 3)]
        >>> sorted(tree.cluster_of(1, tree.default_level))
        [0, 1]
        """
        if num_classes < 1:
            raise XgirError("a confusion tree needs at least one class")
        if len(top_labels) == 0:
            raise XgirError("no top label sets to build a confusion tree from")
        counts = cooccurrence(top_labels, num_classes)
        sim = jaccard_similarity(counts)
        z = average_linkage(sim)
        meta = {"images": len(top_labels), **(meta or {})}
        return cls(z, sim, counts, classes, meta=meta)

    @classmethod
    def fit(cls, model: nn.Module, dataset: ImageDataset, *, k: int = 5, mass: float | None = 0.95,
            batch_size: int = 256) -> ConfusionTree:
        """Fit on the model's top label sets over ``dataset`` (the model is not switched to eval
        mode: call ``model.eval()`` first)."""
        from xgir.models.inference import predict as predict_logits

        if len(dataset) == 0:
            raise XgirError("cannot fit a confusion tree on an empty dataset")
        logits = predict_logits(model, dataset.images, batch_size=batch_size)
        num_classes = int(logits.shape[1])
        top = top_label_sets(torch.softmax(logits, dim=1), k=k, mass=mass)
        classes = dataset.classes if len(dataset.classes) == num_classes else None
        return cls.from_top_labels(top, num_classes, classes,
                                   meta={"k": k, "mass": mass, "dataset": dataset.name})

    @classmethod
    def from_head(cls, head: nn.Module | torch.Tensor, classes: Sequence[str] | None = None, *,
                  meta: dict[str, Any] | None = None) -> ConfusionTree:
        """Data-free tree from the classifier head's weight vectors: average-linkage
        clustering of the K rows of ``head.weight`` (float[K,D]) on the cosine distance
        (``1 - cos``, clipped to [0, 1]); the stored similarity is the cosine similarity
        clipped to [0, 1] and the counts are zero (no images).

        Args:
            head: the final ``nn.Linear`` (or its weight matrix float[K,D]).
            classes: K class names.
        """
        weight = head.weight if isinstance(head, nn.Module) else head
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise XgirError("from_head needs a Linear layer or a weight matrix [K,D]")
        w = torch.nn.functional.normalize(weight.detach().double().cpu(), dim=1)
        k = w.shape[0]
        sim = (w @ w.T).clamp(0.0, 1.0).numpy()
        np.fill_diagonal(sim, 1.0)
        z = average_linkage(sim)
        if classes is not None and len(classes) != k:
            raise XgirError(f"{len(classes)} class names for a head with {k} outputs")
        return cls(z, sim, np.zeros((k, k), dtype=np.int64), classes,
                   meta={"source": "head", "distance": "cosine", "linkage": "average", "level": HEAD_LEVEL,
                    **(meta or {})})

    # ---- cutting -------------------------------------------------------------------------
    def cut(self, level: float) -> np.ndarray:
        """Cluster id int[K] of every label at cut height ``level`` (ids are the tree node of the
        cluster's root: a label alone keeps its own index)."""
        level = float(level)
        if not 0.0 <= level <= 1.0:
            raise XgirError(f"a cut level is a distance in [0, 1], got {level}")
        if level in self._cut_cache:
            return self._cut_cache[level]
        k = self.num_classes
        root = np.arange(k)
        members: dict[int, list[int]] = {i: [i] for i in range(k)}
        for i, (a, b, height, _size) in enumerate(self.linkage):
            node = k + i
            members[node] = members.pop(int(a)) + members.pop(int(b))
            if height <= level + 1e-12:
                root[members[node]] = node
        self._cut_cache[level] = root
        return root

    def cluster_of(self, label: int, level: float) -> frozenset[int]:
        """The labels in ``label``'s cluster at ``level``."""
        if not 0 <= int(label) < self.num_classes:
            raise XgirError(f"label {label} out of range for {self.num_classes} classes")
        root = self.cut(level)
        return frozenset(np.flatnonzero(root == root[int(label)]).tolist())

    def partition(self, top_labels: Sequence[int], level: float) -> list[tuple[int, ...]]:
        """Group an image's top labels by their ancestor at ``level``.

        Clusters are ordered by their first label in ``top_labels`` and keep that order inside
        (pass labels most probable first to get clusters ordered by their best class).
        """
        root = self.cut(level)
        groups: dict[int, list[int]] = {}
        for c in top_labels:
            c = int(c)
            if not 0 <= c < self.num_classes:
                raise XgirError(f"label {c} out of range for {self.num_classes} classes")
            if c not in groups.get(int(root[c]), []):
                groups.setdefault(int(root[c]), []).append(c)
        return [tuple(g) for g in groups.values()]

    def clusters(self, level: float) -> list[tuple[int, ...]]:
        """All clusters at ``level`` with more than one label."""
        root = self.cut(level)
        out = [tuple(np.flatnonzero(root == r).tolist()) for r in np.unique(root)]
        return [c for c in out if len(c) > 1]

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON form: class names, linkage, meta; and the similarity and counts matrices, except
        for a tree built :meth:`from_head` (on load its similarity is the cophenetic one,
        1 - merge height, and its counts are zero)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "linkage": self.linkage.tolist(),
            "meta": self.meta,
        }
        if self.meta.get("source") != "head":  # a head tree's 1000 x 1000 matrices stay out of the file
            out["similarity"] = self.similarity.tolist()
            out["counts"] = self.counts.tolist()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tree as JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConfusionTree:
        """Read a tree written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise XgirError(f"confusion tree not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise XgirError(f"cannot read confusion tree {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise XgirError(f"{path} is not an xgir confusion tree (format '{FORMAT}')")
        if data.get("version") != VERSION:
            raise XgirError(
                f"{path}: confusion tree version {data.get('version')} is not {VERSION}"
            )
        try:
            k = int(data["num_classes"])
            z = np.asarray(data["linkage"], dtype=float).reshape(max(k - 1, 0), 4)
            if "similarity" in data:
                sim = np.asarray(data["similarity"], dtype=float).reshape(k, k)
                counts = np.asarray(data["counts"], dtype=np.int64).reshape(k, k)
            else:
                sim, counts = _cophenetic_similarity(z, k), np.zeros((k, k), dtype=np.int64)
        except (KeyError, ValueError, TypeError) as err:
            raise XgirError(f"{path}: malformed confusion tree ({err})") from None
        return cls(z, sim, counts, data.get("classes"), meta=data.get("meta"))
