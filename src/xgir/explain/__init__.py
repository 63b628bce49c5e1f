"""Explainers: ``explainer(model, x[N,C,H,W], targets) -> heatmaps[N,T,H',W']``.

Find them by name with :func:`get_explainer`; targets are classes, clusters or
weighted logits (:mod:`xgir.explain.targets`).
"""

from xgir.explain.clusters import ConfusionTree
from xgir.explain.cwox import cwox, plot_cwox
from xgir.explain.gradcam import grad_cam
from xgir.explain.registry import Explainer, available_explainers, get_explainer
from xgir.explain.targets import Targets, as_targets

__all__ = [
    "ConfusionTree",
    "Explainer",
    "Targets",
    "as_targets",
    "available_explainers",
    "cwox",
    "get_explainer",
    "grad_cam",
    "plot_cwox",
]
