"""A simulated person: answers "is this region irrelevant?" from ground-truth masks (benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xgir.correct.feedback.store import FeedbackRecord
from xgir.errors import XgirError


class SimulatedAnnotator:
    """Answers "is this region irrelevant?" from ground-truth irrelevant masks bool[N,H,W].

    Accepts a region when at least ``min_overlap`` of it lies on the irrelevant mask, or it
    covers at least ``min_overlap`` of that mask while at most ``max_relevant`` of it lies on
    the relevant mask (when given).
    """

    def __init__(
        self,
        irrelevant: torch.Tensor,
        relevant: torch.Tensor | None = None,
        *,
        min_overlap: float = 0.5,
        max_relevant: float = 0.1,
        name: str = "simulated",
    ) -> None:
        if irrelevant.ndim != 3:
            raise XgirError(f"irrelevant masks must be [N,H,W], got {tuple(irrelevant.shape)}")
        self.irrelevant = irrelevant.bool().cpu().numpy()
        self.relevant = None if relevant is None else relevant.bool().cpu().numpy()
        self.min_overlap, self.max_relevant, self.name = min_overlap, max_relevant, name

    def accepts(self, image_id: int, region: np.ndarray) -> bool:
        area = region.sum()
        if area == 0:
            return False
        truth = self.irrelevant[image_id]
        inter = (region & truth).sum()
        if (
            self.relevant is not None
            and (region & self.relevant[image_id]).sum() > self.max_relevant * area
        ):
            return False
        return bool(
            inter >= self.min_overlap * area
            or (truth.any() and inter >= self.min_overlap * truth.sum())
        )

    def annotate(
        self, image_ids: Sequence[int], regions: Sequence[Sequence[np.ndarray]], *, round: int = 0
    ) -> list[FeedbackRecord]:
        return [
            FeedbackRecord(int(i), k, r, self.accepts(int(i), r), self.name, True, round)
            for i, regs in zip(image_ids, regions, strict=True)
            for k, r in enumerate(regs)
        ]

