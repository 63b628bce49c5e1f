"""Explainers by name: ``get_explainer("gradcam", layer="layer3")``.

Every module in ``xgir.explain`` that defines ``EXPLAINERS = {name: factory}``
contributes its explainers; ``factory(**params)`` returns a callable
``explainer(model, x[N,C,H,W], targets) -> heatmaps float[N,T,H',W']``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from xgir.errors import XgirError


class Explainer(Protocol):
    """``explainer(model, x, targets) -> heatmaps``: x float[N,C,H,W]; targets in any form that
    :func:`xgir.explain.targets.as_targets` reads; heatmaps float[N,T,H',W']."""

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor: ...


def available_explainers() -> dict[str, Callable[..., Explainer]]:
    """Name -> factory of every registered explainer."""
    import xgir.explain as package

    found: dict[str, Callable[..., Explainer]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("registry", "targets") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"xgir.explain.{info.name}")
        found.update(getattr(module, "EXPLAINERS", {}))
    return found


def get_explainer(name: str, **params: Any) -> Explainer:
    """Build the explainer ``name`` with its parameters; clear errors for unknown names or
    parameters."""
    found = available_explainers()
    if name not in found:
        raise XgirError(f"unknown explainer '{name}'; choose one of: {', '.join(sorted(found))}")
    factory = found[name]
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as err:
        raise XgirError(f"bad parameters for explainer '{name}': {err}") from None
    return factory(**params)
