"""The annotation-free anchors as ways to fit the new head of ``xgir train`` mode head
(``head.method``: ``afr``, ``class-balanced``, ``error-upweighting``), on the cached features.

AFR's protocol (Qiu et al. 2023), shared by the three: a seeded ``head.holdout`` share (0.2) of
``data.train`` is held out by the procedure of ``xgir bench waterbirds-photos`` (the permutation
``torch.randperm(N, generator=seed)``, its first ``int((1 - holdout) N)`` images fit the ERM
head, the rest are the held-out part). The permutation is applied to the images sorted by file
name (then path) where they come from files, so the draw does not depend on how the images are
read: class folders (class by class) and a Waterbirds spec over the same files hold out the
same images, and ``xgir data export``'s names (the pool index first) give the suite's order.
Then, on the held-out part only:

- ``afr``: the ERM head (fitted as method erm on the rest) reweighted by
  :func:`xgir.correct.afr.afr_head` (gamma, lambda);
- ``class-balanced``: a fresh head trained class-balanced (:func:`xgir.correct.class_balanced.class_balanced_head`;
  no ERM head);
- ``error-upweighting``: a fresh head with the ERM head's errors upweighted by ``lambda_up``
  (:func:`xgir.correct.jtt.jtt_head`).

No group label is read and nothing is selected: the settings are the config's. They live here, in
the correction layer, and reach ``xgir train`` through :data:`ANCHOR_HEADS`, which the command
line passes to :func:`xgir.train.runner.run_training` (the training layer does not import the
corrections). The record
(results.json ``record``) holds the part sizes, the method's own numbers and, for the methods
with an ERM head, that head's accuracy on every eval split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.models.accuracy import accuracy_from_predictions
from xgir.train.config import AFRHeadSection, ClassBalancedHeadSection, ErrorUpweightingHeadSection
from xgir.train.features import fit_head

if TYPE_CHECKING:
    from xgir.train.pretrained import HeadFit, SplitFeatures


def holdout_split(labels: torch.Tensor, holdout: float, seed: int, classes: list[str] | None = None,
                  files: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices long of the ERM part and of the held-out part of labels long[N] (module docstring):
    the seeded permutation of the images in the order of their ``files`` (sorted by file name,
    then path; the given order without files). One line when a part is empty or lacks a class."""
    n = len(labels)
    order = torch.arange(n)
    if files:
        order = torch.tensor(sorted(range(n), key=lambda i: (Path(files[i]).name, files[i])), dtype=torch.long)
    perm = order[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    cut = int((1 - holdout) * n)
    parts = {"ERM": perm[:cut], "held-out": perm[cut:]}
    k = int(labels.max()) + 1 if classes is None else len(classes)
    for name, idx in parts.items():
        counts = torch.bincount(labels[idx], minlength=k)
        if (counts == 0).any():
            c = int((counts == 0).nonzero()[0])
            what = classes[c] if classes else str(c)
            raise XgirError(f"head.holdout {holdout:g}: the {name} part of data.train ({len(idx)} of {n} images) "
                            f"holds no image of class {what}; give more training images or another holdout")
    return parts["ERM"], parts["held-out"]


def _erm(train: SplitFeatures, idx: torch.Tensor, s: Any, k: int, seed: int) -> nn.Linear:
    return fit_head(train.h[idx], train.labels[idx], k, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                    weight_decay=s.weight_decay, seed=seed)


def _accuracies(head: nn.Linear, evals: dict[str, SplitFeatures]) -> dict[str, float]:
    with torch.no_grad():
        return {name: accuracy_from_predictions(head(f.h).argmax(1), f.labels, f.groups, f.group_names)["accuracy"]
                for name, f in evals.items()}


def _record(info: dict[str, Any], erm_idx: torch.Tensor, rw_idx: torch.Tensor, summary: str) -> dict[str, Any]:
    kept = {k: v for k, v in info.items() if isinstance(v, int | float | str)}
    return {"erm_images": len(erm_idx), "heldout_images": len(rw_idx), **kept, "summary": summary}


def fit_afr(train: SplitFeatures, evals: dict[str, SplitFeatures], s: AFRHeadSection, num_classes: int,
            seed: int) -> HeadFit:
    """``head.method: afr`` (module docstring)."""
    from xgir.correct.afr import afr_head

    erm_idx, rw = holdout_split(train.labels, s.holdout, seed, train.classes or None, train.files)
    erm = _erm(train, erm_idx, s, num_classes, seed)
    head, info = afr_head(train.h[rw], train.labels[rw], erm, gamma=s.gamma, lam=s.lam, epochs=s.retrain_epochs,
                          lr=s.retrain_lr)
    summary = (f"AFR (gamma {s.gamma:g}, lambda {s.lam:g}): the ERM head fitted on {len(erm_idx)} training images, "
               f"reweighted on the held-out {len(rw)} ({s.holdout:.0%}); {s.retrain_epochs} full-batch SGD steps, "
               f"lr {s.retrain_lr:g}")
    return head, {**_record(info, erm_idx, rw, summary), "erm_head_accuracy": _accuracies(erm, evals)}


def fit_class_balanced(train: SplitFeatures, evals: dict[str, SplitFeatures], s: ClassBalancedHeadSection,
                       num_classes: int, seed: int) -> HeadFit:
    """``head.method: class-balanced`` (module docstring)."""
    from xgir.correct.class_balanced import class_balanced_head

    erm_idx, rw = holdout_split(train.labels, s.holdout, seed, train.classes or None, train.files)
    head, info = class_balanced_head(train.h[rw], train.labels[rw], num_classes, balance=s.balance,
                                     epochs=s.retrain_epochs, lr=s.retrain_lr, batch_size=s.retrain_batch_size,
                                     seed=seed)
    summary = (f"class-balanced last-layer retraining ({s.balance}): a fresh head on the held-out {len(rw)} "
               f"training images ({s.holdout:.0%}); {s.retrain_epochs} epochs, SGD lr {s.retrain_lr:g}, batch "
               f"{s.retrain_batch_size}")
    return head, _record(info, erm_idx, rw, summary)


def fit_error_upweighting(train: SplitFeatures, evals: dict[str, SplitFeatures], s: ErrorUpweightingHeadSection,
                          num_classes: int, seed: int) -> HeadFit:
    """``head.method: error-upweighting`` (module docstring)."""
    from xgir.correct.jtt import jtt_head

    erm_idx, rw = holdout_split(train.labels, s.holdout, seed, train.classes or None, train.files)
    erm = _erm(train, erm_idx, s, num_classes, seed)
    head, info = jtt_head(train.h[rw], train.labels[rw], erm, lambda_up=s.lambda_up, epochs=s.retrain_epochs,
                          lr=s.retrain_lr, batch_size=s.retrain_batch_size, seed=seed)
    summary = (f"error upweighting (JTT's idea, last layer; lambda_up {s.lambda_up:g}): the ERM head fitted on "
               f"{len(erm_idx)} training images, a fresh head on the held-out {len(rw)} ({s.holdout:.0%}) with its "
               f"errors upweighted; {s.retrain_epochs} epochs, SGD lr {s.retrain_lr:g}, batch {s.retrain_batch_size}")
    return head, {**_record(info, erm_idx, rw, summary), "erm_head_accuracy": _accuracies(erm, evals)}


ANCHOR_HEADS: dict[str, Any] = {"afr": fit_afr, "class-balanced": fit_class_balanced,
                                "error-upweighting": fit_error_upweighting}
"""``head.method`` -> fit function of the anchors, for ``run_training(..., head_methods=ANCHOR_HEADS)``."""
