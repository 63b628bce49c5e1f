"""Frozen features and linear heads: extract once (cached on disk), train heads fast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.io import cached, fingerprint
from xgir.progress import iterate
from xgir.train.erm import check_loss, check_weights, model_device


@torch.no_grad()
def extract_features(
    features: nn.Module, images: torch.Tensor, batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """``features(x)`` for all images float[N,C,H,W] -> float[N,D] on the CPU (module in eval)."""
    device = model_device(features)
    was_training = features.training
    features.eval()
    out = []
    for i in iterate(range(0, len(images), batch_size), desc="features", enabled=progress, unit="batch"):
        out.append(features(images[i : i + batch_size].to(device)).float().cpu())
    features.train(was_training)
    return torch.cat(out)


def cached_features(
    features: nn.Module, dataset: ImageDataset, key: str, batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """:func:`extract_features` cached on disk under the model's fingerprint and ``key``
    (a description of the dataset: name, split, seed, params)."""
    return cached("features", fingerprint(features, key, len(dataset)),
                  lambda: extract_features(features, dataset.images, batch_size, progress))


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    head: nn.Linear | None = None,
) -> nn.Linear:
    """Train a softmax head (``nn.Linear(D, K)``) on fixed features float[N,D] with Adam.

    A fresh, seeded head unless ``head`` is given (then it is trained further in place).
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if head is None:
        head = nn.Linear(features.shape[1], num_classes)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(features)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            check_loss(loss, "head", epoch, i // batch_size, lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    check_weights(list(head.parameters()), "head", lr)
    return head.eval()


def linear_probe(
    fit_x: torch.Tensor, fit_y: torch.Tensor, score_x: torch.Tensor, score_y: torch.Tensor, c: float = 1.0
) -> float:
    """Accuracy of an L2 logistic regression fitted on standardised ``fit_x`` and scored on
    ``score_x`` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    clf.fit(fit_x.numpy(), fit_y.numpy())
    return float(clf.score(score_x.numpy(), score_y.numpy()))
