"""A sample-weighted softmax head on fixed features: the one fitter of the annotation-free
last-layer anchors (:mod:`xgir.correct.afr`, :mod:`xgir.correct.class_balanced`,
:mod:`xgir.correct.jtt`, :mod:`xgir.correct.dac`).

Each of those methods is "retrain the last layer on held-out features with per-sample
weights"; they differ in the weights, the starting head and the optimiser settings that their
authors used, all of which are arguments here. :func:`~xgir.train.features.fit_head` is the
unweighted minibatch-Adam fitter of the ERM heads and stays as it is.

The objective, for features h float[N,D], labels y long[N] and weights w float[N] >= 0
(normalised here: w_bar = w / sum(w)), over a head (W float[K,D], b float[K]):

    L(W, b) = sum_i w_bar_i CE(W h_i + b, y_i) + lam (||W - W_a||^2 + ||b - b_a||^2)

with (W_a, b_a) the ``anchor`` head (AFR's ERM head; lam = 0: no pull). Full batch
(``batch_size=None``): each epoch is one exact gradient step on L, as AFR's code. Minibatches:
each epoch draws ceil(N / batch_size) batches of indices i.i.d. with probability w_bar_i (with
replacement: PyTorch's ``WeightedRandomSampler``, as LaBonte et al.'s class-balanced sampler,
and JTT's upsampling in expectation); a batch's loss is its mean CE plus the penalty, an
unbiased estimate of L.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.train.erm import check_loss, check_weights

OPTIMIZERS = ("sgd", "adam")


def check_labelled_features(
    h: torch.Tensor, labels: torch.Tensor, num_classes: int, desc: str, *, all_classes: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h.float(), labels.long())`` after checking the shapes: features float[N,D] with N >= 1,
    labels integer [N] in [0, num_classes); with ``all_classes`` every class has a sample.
    XgirError (one line, starting with ``desc``) otherwise."""
    if not torch.is_tensor(h) or h.ndim != 2 or not h.is_floating_point():
        raise XgirError(f"{desc}: features must be a float tensor [N,D], got "
                        f"{tuple(h.shape) if torch.is_tensor(h) else type(h).__name__}")
    if not torch.is_tensor(labels) or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise XgirError(f"{desc}: labels must be an integer tensor [N]")
    if len(labels) != len(h):
        raise XgirError(f"{desc}: {len(h)} feature rows but {len(labels)} labels")
    if len(h) == 0:
        raise XgirError(f"{desc}: no samples")
    if num_classes < 2:
        raise XgirError(f"{desc}: needs at least 2 classes, got {num_classes}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise XgirError(f"{desc}: labels must lie in [0, {num_classes - 1}], got "
                        f"[{int(labels.min())}, {int(labels.max())}]")
    if not bool(torch.isfinite(h).all()):
        raise XgirError(f"{desc}: the features hold NaN or infinite values")
    if all_classes:
        counts = torch.bincount(labels.long(), minlength=num_classes)
        if bool((counts == 0).any()):
            empty = [int(k) for k in (counts == 0).nonzero().flatten()]
            raise XgirError(f"{desc}: class {empty[0]} has no sample ({len(empty)} empty classes); "
                            "every class needs samples in the held-out set")
    return h.float(), labels.long()


def check_head(head: nn.Linear, dim: int, desc: str) -> int:
    """The head's number of classes K, after checking that it is an ``nn.Linear(dim, K)`` with a bias."""
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise XgirError(f"{desc}: the ERM head must be an nn.Linear with a bias, got {type(head).__name__}")
    if head.in_features != dim:
        raise XgirError(f"{desc}: the ERM head reads {head.in_features} features, the features have {dim}")
    return int(head.out_features)



def check_erm_inputs(
    h: torch.Tensor, labels: torch.Tensor, erm_head: nn.Linear, desc: str, *, all_classes: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(h.float(), labels.long(), K)`` for features float[N,D], labels [N] and an ERM head
    ``nn.Linear(D, K)``: :func:`check_labelled_features` and :func:`check_head` together."""
    if not torch.is_tensor(h) or h.ndim != 2:
        raise XgirError(f"{desc}: features must be a float tensor [N,D], got "
                        f"{tuple(h.shape) if torch.is_tensor(h) else type(h).__name__}")
    k = check_head(erm_head, h.shape[1], desc)
    h, y = check_labelled_features(h, labels, k, desc, all_classes=all_classes)
    return h, y, k

@torch.no_grad()
def head_logits(head: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """``head(h)`` float[N,K] on the CPU, without gradients (the head's own device and dtype)."""
    w = head.weight
    return head(h.to(device=w.device, dtype=w.dtype)).float().cpu()


def fit_weighted_head(
    h: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_classes: int,
    *,
    init: nn.Linear | None = None,
    anchor: nn.Linear | None = None,
    lam: float = 0.0,
    epochs: int = 100,
    max_steps: int | None = None,
    lr: float = 1e-2,
    batch_size: int | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clip: float | None = None,
    lr_step: tuple[int, float] | None = None,
    seed: int = 0,
    score: Callable[[nn.Linear], float] | None = None,
    desc: str = "weighted head",
) -> tuple[nn.Linear, dict[str, float]]:
    """A head ``nn.Linear(D, num_classes)`` minimising the weighted objective of the module
    docstring on features ``h`` float[N,D], ``labels`` long[N] and ``weights`` float[N] >= 0
    (any scale; normalised to sum 1).

    ``init``: the starting head (copied; never changed), else a fresh ``nn.Linear`` seeded by
    ``seed`` (PyTorch's default initialisation; the global RNG is left as it was).
    ``anchor`` and ``lam``: the penalty lam (||W - W_a||^2 + ||b - b_a||^2) (``anchor``
    required when lam > 0). ``batch_size=None``: full batch, one step per epoch; else batches
    drawn with probability proportional to the weights. ``max_steps`` stops earlier (counted in
    optimiser steps). ``optimizer``: "sgd" (with ``momentum``) or "adam"; ``weight_decay`` as
    the optimiser's; ``clip``: gradient norm cap (torch ``clip_grad_norm_``); ``lr_step =
    (every, factor)``: the learning rate times ``factor`` every ``every`` epochs (StepLR).

    ``score(head) -> float``, when given, is called after every epoch on a copy of the head;
    the head with the highest score is returned (the earliest on ties), as early stopping on
    a validation score. Returns the head (eval mode) and {"epochs": epochs run, "steps": optimiser
    steps, "best_epoch": 1-based epoch of the returned head, "best_score"} (the last two with
    ``score``).
    """
    h, labels = check_labelled_features(h, labels, num_classes, desc, all_classes=False)
    w = torch.as_tensor(weights)
    if w.shape != labels.shape or not w.is_floating_point():
        raise XgirError(f"{desc}: weights must be float [N] = [{len(labels)}], got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise XgirError(f"{desc}: weights must be finite, >= 0 and not all 0")
    if optimizer not in OPTIMIZERS:
        raise XgirError(f"{desc}: optimizer must be one of {', '.join(OPTIMIZERS)}, got '{optimizer}'")
    if lam < 0 or not math.isfinite(lam):
        raise XgirError(f"{desc}: the penalty lam must be >= 0, got {lam}")
    if lam > 0 and anchor is None:
        raise XgirError(f"{desc}: a penalty lam > 0 needs the anchor head")
    if epochs < 1 or lr <= 0 or (batch_size is not None and batch_size < 1):
        raise XgirError(f"{desc}: epochs >= 1, lr > 0 and batch_size >= 1 (or None), got "
                        f"{epochs}, {lr}, {batch_size}")
    if max_steps is not None and max_steps < 1:
        raise XgirError(f"{desc}: max_steps must be >= 1, got {max_steps}")
    d = h.shape[1]
    if init is not None:
        check_head(init, d, desc)
        if init.out_features != num_classes:
            raise XgirError(f"{desc}: the initial head has {init.out_features} classes, expected {num_classes}")
    if anchor is not None and (check_head(anchor, d, desc) != num_classes):
        raise XgirError(f"{desc}: the anchor head has {anchor.out_features} classes, expected {num_classes}")

    if init is not None:
        head = nn.Linear(d, num_classes)
        with torch.no_grad():
            head.weight.copy_(init.weight.detach().float().cpu())
            head.bias.copy_(init.bias.detach().float().cpu())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Linear(d, num_classes)
    w_a = b_a = None
    if anchor is not None and lam > 0:
        w_a = anchor.weight.detach().float().cpu().clone()
        b_a = anchor.bias.detach().float().cpu().clone()
    params = list(head.parameters())  # [weight, bias]
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step[0], gamma=lr_step[1]) if lr_step else None
    p = (w.double() / w.double().sum()).float()
    gen = torch.Generator().manual_seed(seed)
    n = len(h)
    per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)

    def loss_of(idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:  # full batch: the exact weighted objective
            loss = (p * F.cross_entropy(head(h), labels, reduction="none")).sum()
        else:
            loss = F.cross_entropy(head(h[idx]), labels[idx])
        if w_a is not None and b_a is not None:
            loss = loss + lam * ((head.weight - w_a).pow(2).sum() + (head.bias - b_a).pow(2).sum())
        return loss

    best: tuple[float, int, nn.Linear] | None = None
    steps = 0
    epoch = 0
    while epoch < epochs and (max_steps is None or steps < max_steps):
        head.train()
        for s in range(per_epoch):
            if max_steps is not None and steps >= max_steps:
                break
            idx = None if batch_size is None else torch.multinomial(p, batch_size, replacement=True, generator=gen)
            loss = loss_of(idx)
            check_loss(loss, desc, epoch, s, lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
            opt.step()
            steps += 1
        if sched is not None:
            sched.step()
        epoch += 1
        if score is not None:
            value = float(score(copy.deepcopy(head).eval()))
            if best is None or value > best[0]:
                best = (value, epoch, copy.deepcopy(head))
    check_weights(params, desc, lr)
    info: dict[str, float] = {"epochs": epoch, "steps": steps}
    if best is not None:
        head = best[2]
        info.update(best_epoch=best[1], best_score=best[0])
    return head.eval(), info
