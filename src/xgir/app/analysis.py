"""Explanations and region proposals of one image, computed under the model lock and cached.

Maps are float[H,W] tensors at the image's resolution; proposals are the thesis's
saliency-weighted SLIC segments (:func:`xgir.correct.feedback.propose_regions`).
"""

from __future__ import annotations

import inspect
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from xgir.app.state import AppState, mean_network
from xgir.errors import XgirError


class ProposalSettings(TypedDict):
    """Options of the region proposals (see :func:`xgir.correct.feedback.propose_regions`)."""

    mass: float
    max_regions: int
    n_segments: int


PROPOSALS: ProposalSettings = {"mass": 0.8, "max_regions": 5, "n_segments": 40}
# SLIC compactness: 0.1 on grey [0, 1] images (the thesis's digits, xgir bench decoy); colour images are
# segmented in Lab (0..100), where skimage's usual 10 keeps segments compact
COMPACTNESS = {1: 0.1, 3: 10.0}
HIDDEN = {"cwox"}  # registered explainers shown elsewhere on the page
# one explanation holds the shared model: a request asks for at most this many times the default
# work of its explainer (its ExplainerInfo.limits parameters; occlusion: window positions)
APP_COST = 4


def target_class(state: AppState, image_id: int, target: str | int | None) -> int:
    """``pred`` (default), ``label`` or a class index."""
    if target in (None, "", "pred"):
        return int(state.preds.pred[image_id])
    if target == "label":
        y = state.label(image_id)
        if y is None:
            why = f" ({state.images.no_labels})" if state.images.no_labels else ""
            raise XgirError(f"this image has no known label{why}; use target=pred or a class index")
        return y
    try:
        c = int(target)
    except (TypeError, ValueError):
        raise XgirError(f"target must be pred, label or a class index, got '{target}'") from None
    if not 0 <= c < len(state.classes):
        raise XgirError(f"class index {c} out of range 0..{len(state.classes) - 1}")
    return c


def _fit_map(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    m = m.detach().float().cpu()
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m.view(1, 1, *m.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return m


def explainer_menu() -> list[dict[str, Any]]:
    """The registered explainers with their parameters (name, default) for the page's menu."""
    from xgir.explain.registry import EXPLAINERS

    menu = []
    for name, info in sorted(EXPLAINERS.items()):
        if name in HIDDEN:
            continue
        factory = info.load()
        params = []
        for p in inspect.signature(factory).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = None if p.default is inspect.Parameter.empty else p.default
            if default is None or isinstance(default, (int, float, str, bool)):
                params.append({"name": p.name, "default": "" if default is None else default})
        menu.append({"name": name, "params": params, "description": info.description, "signed": info.signed})
    return menu


def check_cost(method: str, params: dict[str, Any], height: int, width: int) -> None:
    """XgirError (one line naming ``p.NAME``) for parameters that set more than :data:`APP_COST`
    times the default work of ``method`` on an image of height x width pixels."""
    from xgir.explain.gradient import Occlusion
    from xgir.explain.registry import explainer_info

    info = explainer_info(method)
    signature = inspect.signature(info.load()).parameters
    hint = "; xgir explain takes more"
    for key in info.limits:
        default, value = signature[key].default, params.get(key)
        if isinstance(value, int) and isinstance(default, int) and value > APP_COST * default:
            raise XgirError(f"p.{key}={value}: the app takes at most {APP_COST * default} ({APP_COST}x the "
                            f"default {default}), so that one explanation does not hold the model{hint}")
    if method == "occlusion":
        asked = Occlusion(window=params.get("window"), stride=params.get("stride")).geometry(height, width)[2]
        usual = Occlusion().geometry(height, width)[2]
        if asked > APP_COST * usual:
            raise XgirError(f"p.window / p.stride: {asked} window positions, and the app takes at most "
                            f"{APP_COST * usual} ({APP_COST}x the default's); raise stride or window{hint}")


def explain(state: AppState, image_id: int, method: str, target: int, params: dict[str, Any]) -> torch.Tensor:
    """Map float[H,W] of a registered explainer (``gradcam`` at the app's layer by default);
    parameters checked as everywhere (:func:`xgir.explain.registry.check_params`) and for cost
    (:func:`check_cost`)."""
    from xgir.explain import get_explainer
    from xgir.explain.registry import canonical_params, check_params

    if method == "gradcam" and "layer" not in params:
        params = {**params, "layer": state.deep_layer}
    params = canonical_params(method, params)
    check_params(method, params, "p.")
    check_cost(method, params, state.images.height, state.images.width)
    explainer = get_explainer(method, **params)
    x = state.images.images[image_id : image_id + 1]
    with state.model_lock, mean_network(state.loaded.model) as model:
        try:
            maps = explainer(model, x, torch.tensor([[target]]))
        except XgirError:
            raise
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise XgirError(f"{method} failed with these parameters: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return _fit_map(maps[0, 0], state.images.height, state.images.width)


def cwox_image(state: AppState, image_id: int, level: float = 0.5, k: int = 5) -> Any:
    """CWOX-2s of one image (:class:`xgir.explain.cwox.CwoxImage`) with the confusion tree
    fitted on the app's image set (the model's top-label sets)."""
    from xgir.explain import ConfusionTree, cwox
    from xgir.explain.clusters import top_label_sets

    if not 0.0 <= level <= 1.0:
        raise XgirError(f"level is a distance in [0, 1], got {level}")

    def tree() -> ConfusionTree:
        top = top_label_sets(state.preds.probs, k=k, mass=0.95)
        return ConfusionTree.from_top_labels(top, state.preds.probs.shape[1], state.classes)

    t = state.cache.get(("tree", k), tree)
    x = state.images.images[image_id : image_id + 1]
    with state.model_lock, mean_network(state.loaded.model) as model:
        res = cwox(model, x, t, level=level, deep_layer=state.deep_layer, shallow_layer=state.shallow_layer, k=k)
    return res[0]


def proposals(state: AppState, image_id: int) -> tuple[np.ndarray, list[int]]:
    """(SLIC segments int[H,W], proposed segment ids ranked best first) of one image, for its
    true label when known, else the prediction."""
    from xgir.correct.feedback import propose_regions, superpixels

    x = state.images.images[image_id : image_id + 1]
    y = state.label(image_id)
    y = int(state.preds.pred[image_id]) if y is None else y
    compactness = COMPACTNESS.get(int(x.shape[1]), 0.1)
    seg = superpixels(x[0], n_segments=PROPOSALS["n_segments"], compactness=compactness)
    with state.model_lock:  # the model is frozen: the input carries the graph Grad-CAM needs
        regions = propose_regions(state.loaded.model, x.clone().requires_grad_(True), torch.tensor([y]),
                                  state.shallow_layer, compactness=compactness, **PROPOSALS)[0]
    ids = [int(seg[r][0]) for r in regions if r.any()]
    return seg.astype(np.int32), ids
