"""Explanation targets: classes, clusters of classes, weighted combinations of logits.

Every explainer takes ``targets`` in any of these forms and explains each
(image, target) pair; :func:`as_targets` turns them into a :class:`Targets`:

- an ``int`` c: the logit z_c, for every image (T = 1);
- a long tensor [N] or [N,T]: per-image class indices;
- a list of T specs, each applied to every image: an ``int`` (class), a
  ``tuple``/``set``/``frozenset`` of ints or a 1-D long tensor (a cluster C, scored by the
  generalised logit z_C = logsumexp_{c in C} z_c) or a float tensor [K]
  (weights w, score = sum_c w_c z_c);
- a list of N lists of T specs: per-image targets (a list of lists is always per image,
  so ``[[1, 2], [3, 4]]`` means classes 1, 2 for image 0 and 3, 4 for image 1, and is an
  error for N != 2; two clusters for every image are ``[(1, 2), (3, 4)]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xgir.errors import XgirError


@dataclass
class Targets:
    """Scores of N x T targets as functions of logits z float[N,K].

    Attributes:
        weights: float[N,T,K] weights of linear targets (zero rows for clusters).
        cluster: bool[N,T,K] members of cluster targets (all False for linear ones).
        is_cluster: bool[N,T].
    """

    weights: torch.Tensor
    cluster: torch.Tensor
    is_cluster: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.is_cluster.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Targets:
        return Targets(self.weights.to(device), self.cluster.to(device), self.is_cluster.to(device))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Target scores float[N,T] from logits float[N,K] (differentiable)."""
        w = self.weights.to(logits.dtype)
        linear = torch.einsum("ntk,nk->nt", w, logits)
        if not bool(self.is_cluster.any()):
            return linear
        masked = logits[:, None, :].masked_fill(~self.cluster, float("-inf"))
        lse = torch.logsumexp(masked, dim=-1)
        lse = torch.where(self.is_cluster, lse, torch.zeros_like(lse))
        return torch.where(self.is_cluster, lse, linear)

    def logit_grads(self, logits: torch.Tensor) -> torch.Tensor:
        """d score[n,t] / d logits[n,:], float[N,T,K]: the weights, or for a cluster the
        softmax of the logits restricted to the cluster."""
        w = self.weights.to(logits.dtype)
        if not bool(self.is_cluster.any()):
            return w
        masked = logits[:, None, :].detach().masked_fill(~self.cluster, float("-inf"))
        soft = torch.softmax(masked, dim=-1).nan_to_num(0.0)
        return torch.where(self.is_cluster[..., None], soft, w)

    def probability_scores(self, probs: torch.Tensor) -> torch.Tensor:
        """Scores for black-box explainers from probabilities float[N,K]: the class
        probability, the weighted sum, or for a cluster the sum of its probabilities."""
        w = self.weights.to(probs.dtype)
        linear = torch.einsum("ntk,nk->nt", w, probs)
        summed = torch.einsum("ntk,nk->nt", self.cluster.to(probs.dtype), probs)
        return torch.where(self.is_cluster, summed, linear)


def _spec(spec: Any, k: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    weights = torch.zeros(k)
    members = torch.zeros(k, dtype=torch.bool)
    if isinstance(spec, torch.Tensor) and spec.is_floating_point():
        if spec.shape != (k,):
            raise XgirError(f"a weight target must have shape ({k},), got {tuple(spec.shape)}")
        return spec.detach().float().cpu(), members, False
    if isinstance(spec, torch.Tensor) and spec.ndim == 0:
        spec = int(spec)
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 0 <= spec < k:
            raise XgirError(f"target class {spec} out of range: the model has {k} classes")
        weights[spec] = 1.0
        return weights, members, False
    if isinstance(spec, list):
        raise XgirError(f"cannot read target {spec!r}: a cluster is a tuple of classes, e.g. {tuple(spec)!r}")
    if isinstance(spec, (tuple, set, frozenset)) or (isinstance(spec, torch.Tensor) and spec.ndim == 1):
        classes = [int(c) for c in spec]
        if not classes:
            raise XgirError("a cluster target must hold at least one class")
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise XgirError(f"cluster classes {bad} out of range: the model has {k} classes")
        members[classes] = True
        return weights, members, True
    raise XgirError(
        f"cannot read target {spec!r}: give a class index, a tuple of classes (cluster) or a float weight tensor"
    )


def as_targets(targets: Any, n: int, num_classes: int) -> Targets:
    """Normalise ``targets`` (see module docstring) for ``n`` images and ``num_classes`` logits.

    Class 2 and the cluster {0, 1} for each of two images (T = 2); a cluster scores
    logsumexp of its members' logits:

    >>> import torch
    >>> t = as_targets([2, (0, 1)], n=2, num_classes=3)
    >>> t.shape
    (2, 2)
    >>> t.scores(torch.tensor([[0., 0., 1.], [1., 1., 0.]]))
    tensor([[1.0000, 0.6931],
            [0.0000, 1.6931]])
    """
    k = num_classes
    if isinstance(targets, Targets):
        if targets.shape[0] != n:
            raise XgirError(f"targets are for {targets.shape[0]} images, the batch has {n}")
        return targets
    if isinstance(targets, torch.Tensor) and not targets.is_floating_point():
        idx = targets.long().cpu()
        if idx.ndim == 0:
            idx = idx.expand(n)
        if idx.ndim == 1:
            idx = idx[:, None]
        if idx.ndim != 2 or idx.shape[0] != n:
            raise XgirError(f"class targets must be [N] or [N,T] with N={n}, got {tuple(targets.shape)}")
        if bool((idx < 0).any() | (idx >= k).any()):
            raise XgirError(f"target classes must lie in [0, {k - 1}]")
        weights = torch.nn.functional.one_hot(idx, k).float()
        return Targets(weights, torch.zeros(n, idx.shape[1], k, dtype=torch.bool),
                       torch.zeros(n, idx.shape[1], dtype=torch.bool))
    if isinstance(targets, torch.Tensor) and targets.is_floating_point():
        targets = [targets] if targets.ndim == 1 else list(targets)
    if isinstance(targets, int):
        targets = [targets]
    if not isinstance(targets, Sequence) or isinstance(targets, str) or len(targets) == 0:
        raise XgirError(f"cannot read targets {targets!r}: see xgir.explain.targets for the forms")
    # one unambiguous rule: a list of lists is per image (one row per image); clusters are
    # tuples, sets or 1-D long tensors, never lists
    per_image = all(isinstance(t, list) for t in targets)
    if per_image and len(targets) != n:
        raise XgirError(f"a list of lists gives per-image targets: got {len(targets)} rows for {n} images "
                        "(write a cluster as a tuple, e.g. [(1, 2), (3, 4)] for two clusters)")
    rows: list[Sequence[Any]] = list(targets) if per_image else [targets] * n
    t_count = len(rows[0])
    if any(len(r) != t_count for r in rows):
        raise XgirError("every image must have the same number of targets")
    w = torch.zeros(n, t_count, k)
    c = torch.zeros(n, t_count, k, dtype=torch.bool)
    is_c = torch.zeros(n, t_count, dtype=torch.bool)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}
    for i, row in enumerate(rows):
        for j, spec in enumerate(row):
            key = id(spec)
            if key not in cache:
                cache[key] = _spec(spec, k)
            w[i, j], c[i, j], is_c[i, j] = cache[key]
    return Targets(w, c, is_c)
