"""Active explanation feedback: propose regions, store feedback, fine-tune, repeat.

The pipeline of docs/correct.md ("The active feedback loop"):

1. train a model (:mod:`xgir.models.bayes` or any CNN);
2. choose which training images to ask about (:func:`select_random`, or
   :func:`select_uncertain` by the Bayesian model's predictive uncertainty);
3. explain them and propose candidate regions (:func:`propose_regions`: input gradient times
   the upsampled signed Grad-CAM, the pixels holding a given share of its absolute mass, and
   the SLIC superpixels overlapping them);
4. collect feedback (a person in the app, or :class:`SimulatedAnnotator` from ground-truth
   irrelevant masks) into a :class:`FeedbackStore` (SQLite, one row per image and region, with
   who and when; every write is one transaction);
5. fine-tune from the stored feedback (:func:`feedback_masks` gives F_i, 1 = irrelevant pixel;
   :mod:`xgir.correct.bayes_feedback` or a guidance loss uses it) and evaluate.

:func:`active_feedback_loop` runs steps 2-5 for several rounds.

The package's modules, one job each: :mod:`.store` (the feedback store), :mod:`.proposals`
(which images and regions to ask about), :mod:`.annotator` (a simulated person) and
:mod:`.loop` (the rounds of asking and fine-tuning). Their public names are importable from
here, e.g. ``from xgir.correct.feedback import FeedbackStore, propose_regions``.
"""

from __future__ import annotations

from xgir.correct.feedback.annotator import SimulatedAnnotator
from xgir.correct.feedback.loop import Evaluate, FineTune, active_feedback_loop, collect_feedback
from xgir.correct.feedback.proposals import (
    mass_threshold,
    propose_regions,
    saliency_for_proposals,
    select_random,
    select_uncertain,
    superpixels,
)
from xgir.correct.feedback.store import SCHEMA_VERSION, FeedbackRecord, FeedbackStore

__all__ = [
    "SCHEMA_VERSION",
    "Evaluate",
    "FeedbackRecord",
    "FeedbackStore",
    "FineTune",
    "SimulatedAnnotator",
    "active_feedback_loop",
    "collect_feedback",
    "mass_threshold",
    "propose_regions",
    "saliency_for_proposals",
    "select_random",
    "select_uncertain",
    "superpixels",
]
