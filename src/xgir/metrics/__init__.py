"""Metrics: pure functions of heatmaps, masks and model outputs.

- localisation: :func:`epg`, :func:`seg_epg`, :func:`box_epg`, :func:`iou`,
  :func:`pointing_game`, :func:`irrelevant_overlap`, :func:`boxes_from_masks`;
- faithfulness: :func:`deletion`, :func:`insertion`, :func:`perturbation_curves`, :func:`auc`
  (:func:`gaussian_blur` re-exported from its home, :mod:`xgir.data.blur`);
- sanity: :func:`cascading_randomisation`, :func:`randomised_models`, :func:`spearman`,
  :func:`ssim`;
- shift: :func:`worst_group_accuracy`, :func:`evaluate_splits`, :func:`gap_closed`, and
  re-exported from their homes :func:`predict` (:mod:`xgir.models.inference`),
  :func:`accuracy`, :func:`accuracy_by_group`, :func:`accuracy_from_predictions`,
  :func:`group_accuracy` (:mod:`xgir.models.accuracy`);
- report: :func:`evaluate_explainers` (``xgir evaluate``).
"""

from xgir.metrics.faithfulness import (
    PerturbationCurves,
    auc,
    deletion,
    gaussian_blur,
    insertion,
    perturbation_curves,
    step_fractions,
)
from xgir.metrics.localisation import (
    box_epg,
    boxes_from_masks,
    default_tolerance,
    epg,
    iou,
    irrelevant_overlap,
    pointing_game,
    seg_epg,
)
from xgir.metrics.report import evaluate_explainers, markdown_table
from xgir.metrics.sanity import (
    RandomisationResult,
    cascading_randomisation,
    parameter_layers,
    randomised_models,
    rankdata,
    spearman,
    ssim,
)
from xgir.metrics.shift import (
    accuracy,
    accuracy_by_group,
    accuracy_from_predictions,
    accuracy_per_split,
    evaluate_splits,
    gap_closed,
    group_accuracy,
    predict,
    worst_group_accuracy,
)

__all__ = [
    "PerturbationCurves",
    "RandomisationResult",
    "accuracy",
    "accuracy_by_group",
    "accuracy_from_predictions",
    "accuracy_per_split",
    "auc",
    "box_epg",
    "boxes_from_masks",
    "cascading_randomisation",
    "default_tolerance",
    "deletion",
    "epg",
    "evaluate_explainers",
    "evaluate_splits",
    "gap_closed",
    "gaussian_blur",
    "group_accuracy",
    "insertion",
    "iou",
    "irrelevant_overlap",
    "markdown_table",
    "parameter_layers",
    "perturbation_curves",
    "pointing_game",
    "predict",
    "randomised_models",
    "rankdata",
    "seg_epg",
    "spearman",
    "ssim",
    "step_fractions",
    "worst_group_accuracy",
]
