"""The active feedback loop: ask about images, store the answers, fine-tune from them, repeat.

Each round (:func:`active_feedback_loop`) picks new images (:mod:`.proposals`), proposes
regions on them and asks the annotator (:func:`collect_feedback`, answers saved in the
:class:`~xgir.correct.feedback.store.FeedbackStore`), then fine-tunes on all stored feedback
(``fine_tune``, e.g. :func:`xgir.correct.bayes_feedback.fine_tune_feedback`) and evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from xgir.correct.feedback.annotator import SimulatedAnnotator
from xgir.correct.feedback.proposals import propose_regions, select_random, select_uncertain
from xgir.correct.feedback.store import FeedbackRecord, FeedbackStore
from xgir.data.base import ImageDataset
from xgir.errors import XgirError

FineTune = Callable[[nn.Module, ImageDataset, torch.Tensor, torch.Tensor], nn.Module]
Evaluate = Callable[[nn.Module], dict]


def collect_feedback(
    model: nn.Module,
    dataset: ImageDataset,
    image_ids: Sequence[int],
    store: FeedbackStore,
    annotator: SimulatedAnnotator,
    layer: str,
    *,
    round: int = 0,
    mass: float = 0.5,
    max_regions: int = 5,
    batch_size: int = 256,
) -> dict:
    """Propose regions on ``image_ids``, ask the annotator, save the answers. Returns counts."""
    ids = list(image_ids)
    records: list[FeedbackRecord] = []
    n_regions = 0
    for start in range(0, len(ids), batch_size):
        chunk = torch.as_tensor(ids[start : start + batch_size], dtype=torch.long)
        regions = propose_regions(
            model, dataset.images[chunk], dataset.labels[chunk], layer, mass=mass, max_regions=max_regions
        )
        n_regions += sum(len(r) for r in regions)
        records += annotator.annotate(chunk.tolist(), regions, round=round)
    store.add(records)
    accepted = sum(r.accepted for r in records)
    return {"images": len(ids), "regions": n_regions, "accepted": accepted}


def active_feedback_loop(
    model: nn.Module,
    dataset: ImageDataset,
    store: FeedbackStore,
    annotator: SimulatedAnnotator,
    fine_tune: FineTune,
    layer: str,
    *,
    rounds: int = 1,
    per_round: int = 50,
    strategy: str = "random",
    evaluate: Evaluate | None = None,
    seed: int = 0,
    mass: float = 0.5,
    max_regions: int = 5,
    progress: bool = True,
) -> list[dict]:
    """Ask about ``per_round`` new images per round (``strategy``: ``random`` or ``uncertainty``),
    store the answers, fine-tune on all stored feedback with
    ``fine_tune(model, dataset, F bool[N,H,W], has_feedback bool[N]) -> model``, evaluate.

    Returns one dict per round (asked, regions, accepted, images with feedback, evaluation).
    """
    from xgir.progress import iterate

    if strategy not in ("random", "uncertainty"):
        raise XgirError(f"unknown sampling strategy '{strategy}'; choose random or uncertainty")
    if len(dataset) != store.num_images:
        raise XgirError(
            f"the store is for {store.num_images} images but the dataset has {len(dataset)}"
        )
    history = []
    for r in iterate(range(rounds), desc="feedback rounds", enabled=progress, unit="round"):
        asked = store.asked_images()
        candidates = [i for i in range(len(dataset)) if i not in asked]
        if strategy == "random":
            ids = select_random(candidates, per_round, seed=seed * 1000 + r)
        else:
            ids = select_uncertain(model, dataset, candidates, per_round, seed=seed * 1000 + r)
        counts = collect_feedback(
            model, dataset, ids, store, annotator, layer, round=r, mass=mass, max_regions=max_regions
        )
        masks, has = store.feedback_masks()
        model = fine_tune(model, dataset, masks, has)
        entry = {"round": r, **counts, "with_feedback": int(has.sum())}
        if evaluate is not None:
            entry.update(evaluate(model))
        history.append(entry)
    return history
