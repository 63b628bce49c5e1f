"""Class-balanced last-layer retraining and SELF (LaBonte, Muthukumar, Kumar, *Towards
Last-layer Retraining for Group Robustness with Fewer Annotations*, NeurIPS 2023; code:
github.com/tmlabonte/last-layer-retraining). Annotation-free anchors: no group label.

**Class-balanced retraining** (:func:`class_balanced_head`): a fresh last layer trained on a
held-out split (the authors: half of the validation split; the other half selects) with the
classes balanced, on features h_i float[D] and labels y_i:

    "sampler": minimise sum_i w_i CE(W h_i + b, y_i),  w_i = 1 / (K n_{y_i})
               (minibatches drawn with probability w_i, the authors' default class-balanced
               WeightedRandomSampler: each class sums to 1/K)
    "subset":  every class randomly subsampled to the smallest class's size, uniform weights
               (the authors' ``--balance_finetune subset``)

Optimiser as their ``exps/disagreement.py`` + Waterbirds config: the last layer reset to
PyTorch's default initialisation, SGD (lr 3e-3, momentum 0.9, weight decay 1e-4), batch 32,
100 epochs, constant learning rate.

**SELF, early-stop disagreement** (:func:`self_head`): the points of the held-out split on which
an early-stopped ERM model and the final ERM model disagree most,

    d_i = mean_k p_early(k|x_i) (log p_early(k|x_i) - log p_erm(k|x_i))    (their KL term, mean over classes)

the ``num_data`` largest d_i, then the ERM head (not reset) fine-tuned on them class-balanced
(sampler) for 250 steps, SGD (momentum 0.9, weight decay 1e-4, batch 32). Their grid:
num_data in {20, 100, 500}, lr in {1e-4, 1e-3, 1e-2}, the early-stopped model = the ERM run's
1st, 2nd or 5th saved checkpoint (saved every 10 epochs in their Waterbirds config), chosen by
group-labelled validation; here the caller selects (for example
by :func:`xgir.models.accuracy.pseudo_group_worst_accuracy`). The early-stopped model is the
caller's: on frozen features, an ERM head trained for fewer epochs (its logits on the held-out
split are the argument ``early_logits``).

What differs from the paper: the backbone stays frozen for ERM too (xgir's features); the
sampler draws with replacement per batch as PyTorch's sampler does (``subset`` is exact).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.train.weighted_head import check_erm_inputs, check_labelled_features, fit_weighted_head, head_logits

BALANCES = ("sampler", "subset")


def class_balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights float64[N] = 1 / (K n_{y_i}) for labels long[N]: each class sums to 1/K (every
    class must have a sample)."""
    _, y = check_labelled_features(torch.zeros(len(labels), 1), labels, num_classes, "class balance")
    counts = torch.bincount(y, minlength=num_classes).double()
    return 1.0 / (num_classes * counts[y])


def class_balanced_subset(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices long[K m] (sorted) of a random subset with m = the smallest class's count
    samples of every class, drawn without replacement with ``generator``."""
    _, y = check_labelled_features(torch.zeros(len(labels), 1), labels, num_classes, "class balance")
    per = int(torch.bincount(y, minlength=num_classes).min())
    keep = []
    for k in range(num_classes):
        idx = (y == k).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:per]])
    return torch.cat(keep).sort().values


def class_balanced_head(
    h: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    balance: str = "sampler",
    epochs: int = 100,
    lr: float = 3e-3,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
    score: Callable[[nn.Linear], float] | None = None,
) -> tuple[nn.Linear, dict[str, float]]:
    """A fresh head ``nn.Linear(D, num_classes)`` trained class-balanced on held-out features
    ``h`` float[N,D] and labels long[N] (module docstring). Returns the head and {"n": samples
    used, "per_class": the smallest class's count, "epochs", "steps"} (+ "best_epoch",
    "best_score" with ``score``)."""
    if balance not in BALANCES:
        raise XgirError(f"class-balanced retraining: balance must be one of {', '.join(BALANCES)}, got '{balance}'")
    h, y = check_labelled_features(h, labels, num_classes, "class-balanced retraining")
    per = int(torch.bincount(y, minlength=num_classes).min())
    if balance == "subset":
        idx = class_balanced_subset(y, num_classes, torch.Generator().manual_seed(seed))
        h, y = h[idx], y[idx]
        w = torch.ones(len(y), dtype=torch.float64)
    else:
        w = class_balanced_weights(y, num_classes)
    head, info = fit_weighted_head(h, y, w, num_classes, epochs=epochs, lr=lr, batch_size=batch_size,
                                   optimizer="sgd", momentum=momentum, weight_decay=weight_decay, seed=seed,
                                   score=score, desc="class-balanced retraining")
    return head, {"n": len(y), "per_class": per, **info}


def self_disagreement(early_logits: torch.Tensor, erm_logits: torch.Tensor) -> torch.Tensor:
    """SELF's disagreement float[N] between an early-stopped model's logits and the ERM
    model's logits (both float[N,K]): mean over classes of p_early (log p_early - log p_erm)
    (the KL divergence divided by K, as the authors' ``kl_div(..., reduction="none").mean(1)``)."""
    if early_logits.shape != erm_logits.shape or early_logits.ndim != 2:
        raise XgirError(f"SELF: early and ERM logits must both be [N,K], got {tuple(early_logits.shape)} and "
                        f"{tuple(erm_logits.shape)}")
    log_e = early_logits.double().log_softmax(1)
    log_f = erm_logits.double().log_softmax(1)
    return (log_e.exp() * (log_e - log_f)).mean(1)


def self_head(
    h: torch.Tensor,
    labels: torch.Tensor,
    erm_head: nn.Linear,
    early_logits: torch.Tensor,
    *,
    num_data: int = 100,
    lr: float = 1e-3,
    steps: int = 250,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[nn.Linear, dict[str, float]]:
    """SELF (early-stop disagreement): the ERM head fine-tuned class-balanced on the
    ``num_data`` held-out points with the largest :func:`self_disagreement` between
    ``early_logits`` float[N,K] (an early-stopped ERM model on ``h``) and ``erm_head(h)``.
    Returns the head and {"num_data", "selected_errors": share of the selected points that the
    ERM head misclassifies, "steps", "epochs"}."""
    h, y, k = check_erm_inputs(h, labels, erm_head, "SELF", all_classes=False)
    if early_logits.shape != (len(h), k):
        raise XgirError(f"SELF: early_logits must be [N,K] = [{len(h)},{k}], got {tuple(early_logits.shape)}")
    if steps < 1:
        raise XgirError(f"SELF: steps must be >= 1, got {steps}")
    if not 1 <= num_data <= len(h):
        raise XgirError(f"SELF: num_data must lie in [1, {len(h)}], got {num_data}")
    erm_logits = head_logits(erm_head, h)
    d = self_disagreement(early_logits, erm_logits)
    idx = torch.topk(d, num_data).indices
    hs, ys = h[idx], y[idx]
    present = torch.unique(ys)
    counts = torch.bincount(ys, minlength=k).double()
    w = 1.0 / (len(present) * counts[ys])  # class-balanced over the classes that the selection holds
    head, info = fit_weighted_head(hs, ys, w, k, init=erm_head, epochs=steps, max_steps=steps,
                                   lr=lr, batch_size=batch_size, optimizer="sgd", momentum=momentum,
                                   weight_decay=weight_decay, seed=seed, desc="SELF")
    wrong = (erm_logits[idx].argmax(1) != ys).double().mean()
    return head, {"num_data": num_data, "selected_errors": float(wrong), **info}
