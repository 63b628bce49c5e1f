"""The correction started from the app: read the stored feedback, fine-tune a copy of the model
(Bayesian feedback fine-tuning, or a guidance loss with M = not the rejected region), evaluate
before and after, save the corrected model as a checkpoint :func:`xgir.models.load_model` reads.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn

from xgir.app.jobs import Job
from xgir.app.state import AppState, is_bayesian
from xgir.correct.guidance import ATTRIBUTIONS, LOSSES
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.bcos import is_bcos

MAX_OVERLAP_IMAGES = 32  # annotated images used for the overlap figures
MAX_MAP_IMAGES = 8  # annotated images shown before / after
MIN_ANNOTATED = 1  # images with irrelevant regions a correction needs
METHODS = ("bayes", "guidance")
DEFAULTS: dict[str, Any] = {"method": "bayes", "epochs": 15, "lr": 1e-3, "batch_size": 128, "seed": 0,
                            "lambda_fb": 1e-2, "feedback_repeats": 1, "loss": "rrr", "attribution": "grad",
                            "weight": None}
BCOS_DEFAULTS = {"loss": "energy", "attribution": "bcos"}  # a B-cos model: guided by its own explanation


def defaults(state: AppState) -> dict[str, Any]:
    """The form's defaults for the app's model (a B-cos model: Energy on its B-cos contributions)."""
    return {**DEFAULTS, **(BCOS_DEFAULTS if is_bcos(state.loaded.model) else {})}


def _num(params: dict[str, Any], key: str, kind: type, lo: float, hi: float) -> Any:
    value = params.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer()
    ):
        raise XgirError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        raise XgirError(f"{key} must be in [{lo}, {hi}], got {value}")
    return kind(value)


def validate(state: AppState, params: Any) -> dict[str, Any]:
    """Checked fine-tuning parameters (XgirError with one line on anything wrong)."""
    if not isinstance(params, dict):
        raise XgirError("the body must be a JSON object of fine-tuning parameters")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise XgirError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    method = params.get("method", DEFAULTS["method"])
    if method not in METHODS:
        raise XgirError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    found = problems(state, method)
    if found:
        raise XgirError(found[0])
    out = {"method": method, "epochs": _num(params, "epochs", int, 1, 500), "lr": _num(params, "lr", float, 1e-7, 1.0),
           "batch_size": _num(params, "batch_size", int, 1, 4096), "seed": _num(params, "seed", int, 0, 2**31 - 1),
           "lambda_fb": _num(params, "lambda_fb", float, 0.0, 1e6),
           "feedback_repeats": _num(params, "feedback_repeats", int, 1, 100)}
    base = defaults(state)
    loss, attribution = params.get("loss", base["loss"]), params.get("attribution", base["attribution"])
    if loss not in LOSSES:
        raise XgirError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if attribution not in ATTRIBUTIONS:
        raise XgirError(f"attribution must be one of {', '.join(ATTRIBUTIONS)}, got {attribution!r}")
    weight = params.get("weight")
    out.update(loss=loss, attribution=attribution,
               weight=None if weight in (None, "") else _num(params, "weight", float, 0.0, 1e9))
    return out


def model_problem(state: AppState, method: str) -> str:
    """Why the model cannot be corrected by ``method`` (one line), or ""."""
    if method == "bayes":
        if not (is_bayesian(state.loaded.model) and hasattr(state.loaded.model, "last_conv")):
            return "Bayesian feedback fine-tuning needs a Bayesian CNN (BayesLeNet); use the guidance loss"
        return ""
    try:
        head = state.loaded.head_module
    except XgirError as err:
        return f"the guidance loss trains the model's head, and it has none: {err}"
    if not any(True for _ in head.parameters()):
        return f"the model's head '{state.loaded.head}' has no parameters to train"
    return ""


def label_problem(state: AppState) -> str:
    """Why the images' labels stop a correction (one line), or ""."""
    if not bool((state.images.labels < 0).any()):
        return ""
    why = f" ({state.images.no_labels})" if state.images.no_labels else ""
    return (f"fine-tuning needs the true labels of the images{why}; open a labelled image set "
            "(feedback saved here is kept)")


def problems(state: AppState, method: str) -> list[str]:
    """What stops a correction by ``method`` before it starts, one line each (empty: it can run):
    the true labels, a trainable model for the method, enough feedback (:data:`MIN_ANNOTATED`)."""
    out = [label_problem(state)] if label_problem(state) else []
    if model_problem(state, method):
        out.append(model_problem(state, method))
    with state.store() as store:
        _, has = store.feedback_masks()
    if int(has.sum()) < MIN_ANNOTATED:
        out.append("no feedback saved yet: mark irrelevant regions on some images first" if not bool(has.any())
                   else f"{int(has.sum())} annotated image(s); the correction needs at least {MIN_ANNOTATED}")
    return out


def _accuracy(state: AppState, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    from xgir.app.state import predict
    from xgir.models.accuracy import accuracy_from_predictions

    pred = predict(model, images, state.samples).pred
    return float(accuracy_from_predictions(pred, labels)["accuracy"])


def _overlaps(state: AppState, model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple:
    """({explainer: overlap with the rejected regions}, {explainer: maps float[n,H,W]}); a B-cos
    model is also explained by its own contribution maps ("B-cos")."""
    from xgir.bench._guidance_common import explain_maps, overlap

    window = max(4, x.shape[-1] // 7)
    maps = explain_maps(model, x, y, layer=state.shallow_layer, window=window, stride=max(1, window // 2))
    if is_bcos(model):
        from xgir.explain.bcos import contributions

        maps["B-cos"] = contributions(model.eval(), x, y)[:, 0]
    return {k: overlap(v, mask) for k, v in maps.items()}, maps


def evaluate(state: AppState, model: nn.Module, ids: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
    """Accuracy (held-out set and the app's images) and explainer overlap on annotated ``ids``."""
    out: dict[str, Any] = {}
    ev = state.eval_images
    if ev is not None and bool((ev.labels >= 0).all()):
        out["accuracy_eval"] = _accuracy(state, model, ev.images, ev.labels)
    out["accuracy_images"] = _accuracy(state, model, state.images.images, state.images.labels)
    sel = ids[:MAX_OVERLAP_IMAGES]
    try:
        ov, maps = _overlaps(state, model, state.images.images[sel], state.images.labels[sel], masks[sel])
        out["overlap"], out["maps"] = ov, {k: v[:MAX_MAP_IMAGES].detach().cpu() for k, v in maps.items()}
    except Exception as err:  # noqa: BLE001 - an explainer that does not fit this model: say so, keep going
        out["overlap"], out["maps"], out["overlap_error"] = {}, {}, f"{type(err).__name__}: {err}"[:200]
    return out


def _train(state: AppState, model: nn.Module, p: dict[str, Any], data: ImageDataset,
           masks: torch.Tensor, has: torch.Tensor) -> dict[str, Any]:
    if p["method"] == "bayes":
        from xgir.correct.bayes_feedback import fine_tune_feedback

        fine_tune_feedback(model, data, masks, has, epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"],
                           seed=p["seed"], lambda_fb=p["lambda_fb"], feedback_repeats=p["feedback_repeats"],
                           progress=False)
        return {}
    from xgir.correct.guidance import Guidance, calibrate_lambda, guidance_term, with_annotations
    from xgir.train import fit_classifier

    g = Guidance(p["loss"], p["attribution"], state.deep_layer if p["attribution"] == "gradcam" else None)
    data = with_annotations(data, has)
    weight = p["weight"]
    if weight is None:
        weight = calibrate_lambda(model, data, g, mask_key="feedback", invert=True, batch_size=p["batch_size"],
                                  seed=p["seed"])
    fit_classifier(model, data, epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"], seed=p["seed"],
                   extra_loss=guidance_term(g, weight, mask_key="feedback", invert=True), progress=False)
    return {"weight": weight}


def run(state: AppState, p: dict[str, Any], job: Job) -> dict[str, Any]:
    """The job: fine-tune, evaluate before and after, save the checkpoint; returns the result."""
    from xgir.models.load import reload_options, save_loaded

    job.report(0.02, "reading the feedback")
    with state.store() as store:
        masks, has = store.feedback_masks()
    ids = torch.nonzero(has).flatten()
    with state.model_lock:
        before_model = copy.deepcopy(state.loaded.model)
        model = copy.deepcopy(state.loaded.model)
    job.report(0.05, "evaluating the model before")
    before = evaluate(state, before_model, ids, masks)
    job.report(0.3, f"fine-tuning ({p['method']}, {p['epochs']} epochs)")
    for prm in model.parameters():
        prm.requires_grad_(True)
    data = ImageDataset(state.images.images, state.images.labels, extras={"feedback": masks})
    torch.manual_seed(p["seed"])
    info = _train(state, model, p, data, masks, has)
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    job.report(0.75, "evaluating the model after")
    after = evaluate(state, model, ids, masks)
    job.report(0.95, "saving the corrected model")
    src = state.loaded
    corrected = dataclasses.replace(src, model=model, classes=list(src.classes), kwargs=dict(src.kwargs))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(job.started))
    path = save_loaded(corrected, state.out / f"corrected-{stamp}-job{job.id}.pt",
                       meta={"correction": p, "feedback": str(state.feedback_path), "images": state.images.spec,
                             "annotated": int(has.sum())})
    return {"params": p, "before": before, "after": after, "ids": ids[:MAX_MAP_IMAGES].tolist(),
            "annotated": int(has.sum()), "checkpoint": str(path),
            "load_with": reload_options(corrected, path), **info}
