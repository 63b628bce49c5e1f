"""Correcting a model with explanations.

- XGIR, interventional retraining of the softmax head (:mod:`xgir.correct.xgir`, its variants in
  :mod:`xgir.correct.xgir_variants`, the ``xgir correct`` pipeline in :mod:`xgir.correct.pipeline`
  with its sharded passes) and the DFR reference (:mod:`xgir.correct.dfr`);
- the annotation-free last-layer anchors that users run instead of XGIR: AFR
  (:mod:`xgir.correct.afr`), class-balanced retraining and SELF (:mod:`xgir.correct.class_balanced`),
  last-layer error upweighting (:mod:`xgir.correct.jtt`), ExMap (:mod:`xgir.correct.exmap`) and DaC
  (:mod:`xgir.correct.dac`), all fitting heads with :func:`xgir.train.weighted_head.fit_weighted_head`;
- model guidance with masks or boxes: RRR, Energy, L1, PPCE (:mod:`xgir.correct.guidance`);
- Bayesian fine-tuning from explanation feedback (:mod:`xgir.correct.bayes_feedback`) with the
  feedback store, region proposals and the active loop (:mod:`xgir.correct.feedback`).

The public names below are importable from ``xgir.correct`` (loaded on first use, so importing
the package stays cheap)::

    from xgir.correct import XGIRConfig, xgir_retrain, Guidance, fine_tune_guided
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "xgir_config": ("XGIRConfig",),
    "xgir": ("XGIRRecord", "xgir_retrain", "retrain_head", "support_from_heatmaps",
             "true_class_heatmaps", "cwox_true_cluster_heatmaps", "unit_responses", "empty_images"),
    "dfr": ("dfr_head",),
    "afr": ("afr_head", "afr_weights"),
    "class_balanced": ("class_balanced_head", "class_balanced_weights", "class_balanced_subset", "self_head",
                       "self_disagreement"),
    "jtt": ("jtt_head", "jtt_weights"),
    "exmap": ("exmap_head", "exmap_pseudo_groups", "eigengap_clusters"),
    "dac": ("dac_head", "dac_compose", "dac_pairs", "dac_masks"),
    "guidance": ("Guidance", "fine_tune_guided", "rrr_loss", "energy_loss", "energy_star_loss", "l1_loss",
                 "ppce_loss", "attribution_map", "annotation_flags"),
    "bayes_feedback": ("fine_tune_feedback", "feedback_objective"),
    "feedback": ("FeedbackStore", "FeedbackRecord", "SimulatedAnnotator", "propose_regions", "select_random",
                 "select_uncertain", "collect_feedback", "active_feedback_loop"),
    "pipeline": ("XGIRRunConfig", "run_xgir_pipeline"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"xgir.correct.{_HOME[name]}"), name)
    raise AttributeError(f"module 'xgir.correct' has no attribute '{name}'")
