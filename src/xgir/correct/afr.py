"""AFR, automatic feature reweighting (Qiu, Potapczynski, Izmailov, Wilson, *Simple and Fast
Group Robustness by Automatic Feature Reweighting*, ICML 2023; code: github.com/AndPotap/afr).
An annotation-free anchor: it needs no group label.

The ERM model is trained on 80 % of the training split (the caller does the split); its
last layer (W0, b0) is retrained on the other 20 %, features h_i float[D] with labels y_i,
with weights that emphasise the points that the ERM head gets wrong:

    p_i   = softmax(W0 h_i + b0)[y_i]                       (the ERM's probability of the true class)
    w_i   = exp(-gamma p_i) / n_{y_i}                        (class-rebalanced: n_y = count of class y)
    w_i  <- w_i / sum_j w_j                                  (normalised)
    L(W,b) = sum_i w_i CE(W h_i + b, y_i) + lam (||W - W0||^2 + ||b - b0||^2)

with (W, b) initialised at (W0, b0). The class rebalancing is the authors' (their
``rebalance_weights`` multiplies class c's weights by N / n_c): every class counts as if the
classes had equal sizes; the classes' total weights are then proportional to their mean
exp(-gamma p), not equal.

Optimisation as the authors' second stage (``train_embeddings.py`` and the README's Waterbirds
command): full batch, plain SGD (lr 1e-2, no momentum, no weight decay), 500 steps, gradient
norm clipped to 1, W initialised at W0. Defaults: gamma 10 and lam 0 (their README's Waterbirds
command); their notebook tunes gamma over linspace(4, 20, 33) and lam over {0, 0.1, 0.2, 0.3}
and picks the epoch and both by worst-group accuracy on group-labelled validation data: here
the caller selects gamma and lam, and ``score`` (for example
:func:`xgir.models.accuracy.pseudo_group_worst_accuracy` on held-out features, no group label)
picks the epoch when given; without it the last step's head is returned.

What differs from the paper: nothing in the objective or the optimiser. The head starts at
(W0, b0) as in their ``train_embeddings.py`` (their notebook instead adds a freshly initialised
linear layer to the ERM logits and penalises it, so it starts near, not at, W0); the epoch is
the last one unless ``score`` picks it; the ERM model and the split are the caller's, and the
features are those of xgir's frozen extractor (the paper's ERM fine-tunes the whole network on
the 80 %).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.train.weighted_head import check_erm_inputs, check_labelled_features, fit_weighted_head, head_logits


def afr_weights(erm_logits: torch.Tensor, labels: torch.Tensor, gamma: float, *,
                rebalance: bool = True) -> torch.Tensor:
    """AFR's weights float64[N] (summing to 1) from the ERM head's logits float[N,K] on the
    reweighting split and the labels long[N]: exp(-gamma p_i(y_i)), divided by the count of
    class y_i when ``rebalance`` (the authors' class rebalancing), normalised. gamma >= 0
    (gamma = 0 with rebalancing: plain class-balanced weights)."""
    if not (math.isfinite(gamma) and gamma >= 0):
        raise XgirError(f"AFR: gamma must be >= 0, got {gamma}")
    if erm_logits.ndim != 2 or labels.shape != erm_logits.shape[:1]:
        raise XgirError(f"AFR: logits must be [N,K] and labels [N], got {tuple(erm_logits.shape)} and "
                        f"{tuple(labels.shape)}")
    k = erm_logits.shape[1]
    _, y = check_labelled_features(erm_logits.float(), labels, k, "AFR", all_classes=False)
    p_true = erm_logits.double().softmax(1).gather(1, y[:, None])[:, 0]
    w = torch.exp(-gamma * p_true)
    if rebalance:
        counts = torch.bincount(y, minlength=k).double()
        w = w / counts[y]
    return w / w.sum()


def afr_head(
    h_rw: torch.Tensor,
    labels: torch.Tensor,
    erm_head: nn.Linear,
    *,
    gamma: float = 10.0,
    lam: float = 0.0,
    rebalance: bool = True,
    epochs: int = 500,
    lr: float = 1e-2,
    clip: float | None = 1.0,
    score: Callable[[nn.Linear], float] | None = None,
) -> tuple[nn.Linear, dict[str, float]]:
    """AFR's head ``nn.Linear(D, K)`` on raw features, from the reweighting split's features
    ``h_rw`` float[N,D] (the 20 % that the ERM model did not train on), labels long[N] and the
    ERM head ``erm_head`` = ``nn.Linear(D, K)`` (W0, b0). ``epochs`` full-batch steps.

    Returns the head and {"gamma", "lam", "erm_error_weight": the share of the weight on the
    points that the ERM head misclassifies, "epochs", "steps"} (+ "best_epoch", "best_score"
    with ``score``, see :func:`~xgir.train.weighted_head.fit_weighted_head`).
    """
    h, y, k = check_erm_inputs(h_rw, labels, erm_head, "AFR")
    if not (math.isfinite(lam) and lam >= 0):
        raise XgirError(f"AFR: lam must be >= 0, got {lam}")
    logits = head_logits(erm_head, h)
    w = afr_weights(logits, y, gamma, rebalance=rebalance)
    head, info = fit_weighted_head(h, y, w, k, init=erm_head, anchor=erm_head, lam=lam, epochs=epochs, lr=lr,
                                   batch_size=None, optimizer="sgd", clip=clip, score=score, desc="AFR")
    wrong = logits.argmax(1) != y
    return head, {"gamma": float(gamma), "lam": float(lam), "erm_error_weight": float(w[wrong].sum()), **info}
