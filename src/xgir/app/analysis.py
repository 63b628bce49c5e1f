"""Explanations and region proposals of one image, computed under the model lock and cached.

Maps are float[H,W] tensors at the image's resolution; proposals are the thesis's
saliency-weighted SLIC segments (:func:`xgir.correct.feedback.propose_regions`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from xgir.app.menu import APP_COST, check_available
from xgir.app.progress import Run, tracking
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
# a proposal is flagged when at least this share of its pixels lies in the core of the evidence: the
# fewest pixels holding EVIDENCE_MASS of the positive mass of the class's Grad-CAM at the proposals' layer
FLAG_CORE, EVIDENCE_MASS = 0.5, 0.5
IG_CHUNKS = 8  # the app runs IG in this many chunks of its steps, so that its progress moves
BASELINE_IMAGES = 32  # references of a data-baseline method: the app's other images


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


def is_signed(method: str) -> bool:
    """Whether ``method``'s maps carry a sign (the registry's declaration); False if unknown."""
    from xgir.explain.registry import EXPLAINERS

    return method in EXPLAINERS and EXPLAINERS[method].signed


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


def app_params(state: AppState, image_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the app adds: the app's deep layer for Grad-CAM, no progress bar on the
    server's terminal, IG in chunks (its progress moves), the app's other images as the
    references of a data-baseline method."""
    from xgir.explain.registry import explainer_info

    info = explainer_info(method)
    signature = inspect.signature(info.load()).parameters
    out = dict(params)
    if info.needs_layer and "layer" not in out:
        out["layer"] = state.deep_layer
    if "progress" in signature:
        out.setdefault("progress", False)
    if method == "ig" and "internal_batch_size" not in out:
        out["internal_batch_size"] = max(1, -(-int(out.get("n_steps", 50)) // IG_CHUNKS))
    if info.baseline == "data" and out.get("baseline") is None:
        others = [j for j in range(len(state.images)) if j != image_id][:BASELINE_IMAGES]
        if len(others) < 2:
            raise XgirError(f"{method} needs at least 2 other images as references; open more images")
        out["baseline"] = state.images.images[others]
    return out


def explain(state: AppState, image_id: int, method: str, target: int, params: dict[str, Any],
            run: Run | None = None) -> torch.Tensor:
    """Map float[H,W] of a registered explainer (``gradcam`` at the app's layer by default);
    parameters checked as everywhere (:func:`xgir.explain.registry.check_params`) and for cost
    (:func:`check_cost`); a method the app cannot run refused with the menu's reason. ``run``
    follows its progress (:mod:`xgir.app.progress`)."""
    from xgir.explain import get_explainer
    from xgir.explain.registry import canonical_params, check_params

    check_available(method, state)
    params = canonical_params(method, params)
    check_params(method, params, "p.")
    check_cost(method, params, state.images.height, state.images.width)
    explainer = get_explainer(method, **app_params(state, image_id, method, params))
    x = state.images.images[image_id : image_id + 1]
    with state.model_lock, mean_network(state.loaded.model) as model, tracking(run, model):
        try:
            maps = explainer(model, x, torch.tensor([[target]]))
        except XgirError:
            raise
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise XgirError(f"{method} failed with these parameters: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return _fit_map(maps[0, 0], state.images.height, state.images.width)


def tree_source(state: AppState) -> str:
    """Where the CWOX tree comes from: ``head`` (the head's weight vectors, data-free: the ImageNet
    model's 1000 classes) or ``images`` (fitted on the app's images); ``auto``: images for an
    embedded data set (decoy-digits), else the head, as ``xgir explain --tree-source auto``."""
    from xgir.data.images import is_embedded

    if state.tree_source != "auto":
        return state.tree_source
    return "images" if is_embedded(state.images.spec) else "head"


def confusion_tree(state: AppState, k: int = 5) -> Any:
    """The app's confusion tree (:func:`tree_source`), built once."""
    from xgir.explain import ConfusionTree
    from xgir.explain.clusters import top_label_sets

    def build() -> ConfusionTree:
        if tree_source(state) == "head":
            head = state.loaded.head_module
            if not isinstance(head, torch.nn.Linear):
                raise XgirError(f"the model's head '{state.loaded.head}' is not a Linear layer; start the app "
                                "with --tree images")
            return ConfusionTree.from_head(head, state.classes)
        top = top_label_sets(state.preds.probs, k=k, mass=0.95)
        return ConfusionTree.from_top_labels(top, state.preds.probs.shape[1], state.classes)

    return state.cache.get(("tree", k, tree_source(state)), build)


def cwox_image(state: AppState, image_id: int, level: float | None = None, k: int = 5) -> Any:
    """CWOX-2s of one image (:class:`xgir.explain.cwox.CwoxImage`) with the app's confusion tree
    (:func:`confusion_tree`), cut at ``level`` (default: the tree's own)."""
    from xgir.explain import cwox

    if level is not None and not 0.0 <= level <= 1.0:
        raise XgirError(f"level is a distance in [0, 1], got {level}")
    t = confusion_tree(state, k)
    x = state.images.images[image_id : image_id + 1]
    with state.model_lock, mean_network(state.loaded.model) as model:
        res = cwox(model, x, t, level=t.default_level if level is None else level, deep_layer=state.deep_layer,
                   shallow_layer=state.shallow_layer, k=k, mass=None if tree_source(state) == "head" else 0.95)
    return res[0]


def evidence(state: AppState, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(positive Grad-CAM float[H,W] of the image's class at the proposals' layer, its core bool[H,W]:
    the fewest pixels holding :data:`EVIDENCE_MASS` of it); the class is the true label when known,
    else the prediction. Cached."""
    from xgir.correct.feedback.proposals import mass_threshold

    def compute() -> tuple[np.ndarray, np.ndarray]:
        y = state.label(image_id)
        y = int(state.preds.pred[image_id]) if y is None else y
        ev = explain(state, image_id, "gradcam", y, {"layer": state.shallow_layer}).clamp(min=0)
        return ev.numpy(), mass_threshold(ev[None], EVIDENCE_MASS)[0].numpy()

    return state.cache.get(("evidence", image_id), compute)


@dataclass
class Proposals:
    """Region proposals of one image: SLIC segments int[H,W]; proposed segment ids, best first;
    for each, its share of the positive evidence and of its pixels in the evidence's core; the
    flagged ones (:data:`FLAG_CORE`): they lie on what the explanation itself rests on."""

    segments: np.ndarray
    proposed: list[int]
    share: dict[int, float]
    core: dict[int, float]
    flagged: list[int]


def proposals(state: AppState, image_id: int) -> Proposals:
    """The saliency-weighted SLIC proposals of one image, for its true label when known, else the
    prediction; each scored against the class's Grad-CAM at the proposals' layer."""
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
    ev, core = evidence(state, image_id)
    total = float(ev.sum()) or 1.0
    shares = {s: float(ev[seg == s].sum()) / total for s in ids}
    cores = {s: float(core[seg == s].mean()) for s in ids}
    flagged = [s for s in ids if cores[s] >= FLAG_CORE]
    return Proposals(seg.astype(np.int32), ids, shares, cores, flagged)
