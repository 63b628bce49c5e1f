"""Last-layer error upweighting: JTT's idea (Liu, Haghgoo, Chen, Raghunathan, Koh, Sagawa,
Liang, Finn, *Just Train Twice: Improving Group Robustness without Training Group
Information*, ICML 2021) on the last layer only. An annotation-free anchor: no group label.

JTT trains an identification model by ERM, takes its error set E = {i : argmax f(x_i) != y_i},
upsamples E by lambda_up and trains the **whole network** again from its initialisation. Here
(frozen features, as the other last-layer anchors): the ERM head's errors on the held-out split
(the caller may pass an early-stopped ERM head, JTT's T epochs), weights

    w_i = lambda_up if ERM misclassifies h_i else 1,    minimise sum_i w_i CE(W h_i + b, y_i) / sum_j w_j

and a fresh last layer trained on the held-out features with minibatches drawn with probability
proportional to w_i (upsampling in expectation). Default lambda_up = 100 (JTT's Waterbirds value;
their grid: {4, 5, 6, 20, 50, 100}); the caller selects it.

What differs from the paper: only the last layer is retrained (JTT retrains the network); the
error set is found on the held-out split, not on the ERM's own training set; the optimiser is
the last-layer one of :func:`xgir.correct.class_balanced.class_balanced_head` (SGD, lr 3e-3,
momentum 0.9, weight decay 1e-4, batch 32, 100 epochs: LaBonte et al.'s last-layer settings),
since JTT's whole-network settings (lr 1e-5, weight decay 1) do not transfer to a linear head.
No class balancing, as JTT.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.train.weighted_head import check_erm_inputs, fit_weighted_head, head_logits


def jtt_weights(erm_pred: torch.Tensor, labels: torch.Tensor, lambda_up: float) -> torch.Tensor:
    """Weights float64[N]: ``lambda_up`` where the ERM prediction long[N] differs from the label
    long[N], 1 elsewhere (not normalised). lambda_up >= 1."""
    if not (math.isfinite(lambda_up) and lambda_up >= 1):
        raise XgirError(f"error upweighting: lambda_up must be >= 1, got {lambda_up}")
    if erm_pred.shape != labels.shape or labels.ndim != 1:
        raise XgirError(f"error upweighting: ERM predictions and labels must both be [N], got "
                        f"{tuple(erm_pred.shape)} and {tuple(labels.shape)}")
    wrong = erm_pred.long() != labels.long()
    return torch.where(wrong, torch.tensor(float(lambda_up), dtype=torch.float64),
                       torch.tensor(1.0, dtype=torch.float64))


def jtt_head(
    h: torch.Tensor,
    labels: torch.Tensor,
    erm_head: nn.Linear,
    *,
    lambda_up: float = 100.0,
    epochs: int = 100,
    lr: float = 3e-3,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
    score: Callable[[nn.Linear], float] | None = None,
) -> tuple[nn.Linear, dict[str, float]]:
    """A fresh head ``nn.Linear(D, K)`` trained on held-out features ``h`` float[N,D] and labels
    long[N] with the errors of ``erm_head`` (``nn.Linear(D, K)``) upweighted by ``lambda_up``.
    Returns the head and {"lambda_up", "errors": how many points ERM misclassifies, "error_weight":
    their share of the weight, "epochs", "steps"} (+ "best_epoch", "best_score" with ``score``)."""
    h, y, k = check_erm_inputs(h, labels, erm_head, "error upweighting")
    pred = head_logits(erm_head, h).argmax(1)
    w = jtt_weights(pred, y, lambda_up)
    wrong = pred != y
    head, info = fit_weighted_head(h, y, w, k, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="sgd",
                                   momentum=momentum, weight_decay=weight_decay, seed=seed, score=score,
                                   desc="error upweighting")
    return head, {"lambda_up": float(lambda_up), "errors": int(wrong.sum()),
                  "error_weight": float(w[wrong].sum() / w.sum()), **info}
