"""Explainers: ``explainer(model, x[N,C,H,W], targets) -> heatmaps[N,T,H',W']``."""

from xgir.explain.targets import Targets, as_targets

__all__ = ["Targets", "as_targets"]
