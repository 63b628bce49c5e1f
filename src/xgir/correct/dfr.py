"""DFR reference (Kirichenko et al.) as its authors run it: last-layer retraining on a
group-balanced held-out set with group labels.

Features standardised; L1-penalised logistic regression; C chosen by worst-group
accuracy on one half of the held-out set (fitted on the other half); the final head
is the average of heads fitted on several group-balanced resamples of the whole
held-out set. It uses group labels: an upper reference, not a competitor on equal terms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.models.accuracy import accuracy_from_predictions


def _balanced_index(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with the same number of samples from each group (the smallest group's size)."""
    ids = np.unique(groups)
    per = min(int((groups == g).sum()) for g in ids)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), per, replace=False) for g in ids])


def _worst_group(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    return float(accuracy_from_predictions(torch.from_numpy(pred), torch.from_numpy(y),
                                           torch.from_numpy(groups))["worst_group"])


def dfr_head(
    h: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, num_classes: int, *,
    c_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0), resamples: int = 5, seed: int = 0,
) -> tuple[nn.Linear, dict[str, float]]:
    """DFR head ``nn.Linear(D, K)`` from held-out features float[N,D], labels and groups.

    Returns the head (acting on raw, unstandardised features) and {"C": chosen C}.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    if len(h) != len(labels) or len(h) != len(groups):
        raise XgirError("DFR: features, labels and groups must have the same length")
    x = h.numpy().astype(np.float64)
    y, g = labels.numpy(), groups.numpy()
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(z))
    fit_i, val_i = perm[: len(z) // 2], perm[len(z) // 2 :]

    def fit(idx: np.ndarray, c: float) -> OneVsRestClassifier:
        # L1 logistic regression with liblinear as the DFR code (one-vs-rest for K > 2 classes);
        # random_state: liblinear shuffles, otherwise from numpy's global state (not reproducible)
        clf = OneVsRestClassifier(LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", max_iter=1000,
                                                    random_state=seed))
        return clf.fit(z[idx], y[idx])

    scores = {}
    for c in c_grid:
        idx = fit_i[_balanced_index(g[fit_i], rng)]
        scores[c] = _worst_group(fit(idx, c).predict(z[val_i]), y[val_i], g[val_i])
    best = max(c_grid, key=lambda c: (scores[c], -c))
    coefs, intercepts = [], []
    for _ in range(resamples):
        clf = fit(_balanced_index(g, rng), best)
        if len(clf.classes_) != num_classes:
            raise XgirError("DFR: a balanced resample lacks some classes; the held-out set is too small")
        coef = np.concatenate([e.coef_ for e in clf.estimators_])
        intercept = np.concatenate([e.intercept_ for e in clf.estimators_])
        if len(clf.estimators_) == 1:  # binary: one model; logits (0, w.x + b) give its decision
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        coefs.append(coef)
        intercepts.append(intercept)
    w = np.mean(coefs, axis=0) / sd  # back to raw features
    b = np.mean(intercepts, axis=0) - w @ mu
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w).float())
        head.bias.copy_(torch.from_numpy(b).float())
    return head.eval(), {"C": float(best)}
