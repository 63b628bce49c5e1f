"""JSON and PNG endpoints. Images are named by integer id only (the route only matches digits);
every POST body is validated, and a bad request gets a 4xx with one line ``{"error": ...}``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xgir.app import analysis, render
from xgir.app.state import AppState
from xgir.correct.feedback import FeedbackRecord
from xgir.errors import XgirError

NAME = re.compile(r"[\w .@-]{1,64}")  # an annotator's name (fullmatch: no newline or control character)


def state_of(request: Request) -> AppState:
    return request.app.state.xgir


def image_id(request: Request) -> int:
    return state_of(request).check_id(int(request.path_params["image_id"]))


def png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def row(state: AppState, i: int) -> dict[str, Any]:
    y, p = state.label(i), int(state.preds.pred[i])
    return {"id": i, "name": state.images.names[i], "label": y, "label_name": state.class_name(y),
            "pred": p, "pred_name": state.class_name(p), "confidence": float(state.preds.confidence[i]),
            "uncertainty": float(state.preds.uncertainty[i]), "correct": None if y is None else y == p}


def select(state: AppState, cls: str = "", mis: str = "", sort: str = "id") -> list[int]:
    """Image ids filtered by predicted or true class ``cls`` and ``mis`` (misclassified only), sorted by
    ``sort``: id, uncertainty (most uncertain first) or confidence (least confident first)."""
    ids = torch.arange(len(state.images))
    keep = torch.ones(len(ids), dtype=torch.bool)
    if cls not in ("", None):
        c = _class_index(state, cls)
        keep &= (state.preds.pred == c) | (state.images.labels == c)
    if mis in ("1", "true", "on"):
        keep &= (state.images.labels >= 0) & (state.preds.pred != state.images.labels)
    ids = ids[keep]
    if sort == "uncertainty":
        ids = ids[state.preds.uncertainty[ids].argsort(descending=True, stable=True)]
    elif sort == "confidence":
        ids = ids[state.preds.confidence[ids].argsort(stable=True)]
    elif sort != "id":
        raise XgirError(f"sort must be id, uncertainty or confidence, got '{sort}'")
    return ids.tolist()


def _class_index(state: AppState, cls: str) -> int:
    try:
        c = int(cls)
    except ValueError:
        raise XgirError(f"cls must be a class index, got '{cls[:40]}'") from None
    if not 0 <= c < len(state.classes):
        raise XgirError(f"cls {str(c)[:40]} is not a class index 0..{len(state.classes) - 1}")
    return c


def list_images(request: Request) -> JSONResponse:
    state, q = state_of(request), request.query_params
    ids = select(state, q.get("cls", ""), q.get("mis", ""), q.get("sort", "id"))
    return JSONResponse({"count": len(ids), "uncertainty": state.preds.uncertainty_name,
                         "images": [row(state, i) for i in ids]})


def image_png(request: Request) -> Response:
    state, i = state_of(request), image_id(request)
    return png(state.cache.get(("img", i), lambda: render.image_png(state.images.images[i])))


def params_from_query(query: Any) -> dict[str, Any]:
    """``p.NAME=VALUE`` query items -> {NAME: YAML-parsed VALUE}; empty values are left out."""
    import yaml

    out = {}
    for key, value in query.multi_items():
        if key.startswith("p.") and value.strip() != "":
            name = key[2:]
            if not name.isidentifier():
                raise XgirError(f"bad parameter name '{name[:40]}'")
            try:
                out[name] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise XgirError(f"cannot read the value of parameter '{name}'") from None
    return out


def explain_png(request: Request) -> Response:
    """The map of ``method`` over image ``image_id``; ``run=TOKEN`` names the computation so that
    the page can poll its progress (:func:`progress_json`)."""
    from xgir.app.progress import Run, check_token, expected_images

    state, i, q = state_of(request), image_id(request), request.query_params
    method = q.get("method", "gradcam")
    target = analysis.target_class(state, i, q.get("target", "pred"))
    params = params_from_query(q)
    token = check_token(q["run"]) if "run" in q else None
    key = ("explain", i, method, target, tuple(sorted((k, repr(v)) for k, v in params.items())))

    def compute() -> bytes:
        run = None
        if token is not None:
            h, w = state.images.height, state.images.width
            try:
                work = expected_images(method, params, h, w)
            except (XgirError, TypeError, ValueError):
                work = None  # a bad parameter: explain() says so
            run = state.runs.add(token, Run(method, work))
        heat = analysis.explain(state, i, method, target, params, run)
        return render.overlay(state.images.images[i], heat, signed=analysis.is_signed(method))

    return png(state.cache.get(key, compute))


def progress_json(request: Request) -> JSONResponse:
    """Progress of the explanation named ``run`` (404 while it has not started or is forgotten)."""
    from xgir.app.progress import check_token

    token = check_token(request.path_params["token"])
    run = state_of(request).runs.get(token)
    if run is None:
        raise LookupError(f"no explanation run '{token}' (not started yet, or finished long ago)")
    return JSONResponse(run.public())


def _level(request: Request) -> float:
    """The ``level`` asked for, else the app's tree's default cut (0.5 fitted, 0.8 from the head)."""
    value = request.query_params.get("level", "")
    if value.strip():
        return float(value)
    return float(analysis.confusion_tree(state_of(request)).default_level)


def _cwox(request: Request) -> tuple[AppState, int, Any]:
    state, i, level = state_of(request), image_id(request), _level(request)
    return state, i, state.cache.get(("cwox", i, level), lambda: analysis.cwox_image(state, i, level))


def cwox_json(request: Request) -> JSONResponse:
    state, i, im = _cwox(request)
    level = query_level = _level(request)
    prob = dict(zip(im.classes, im.probs, strict=True))
    clusters = []
    for j, cluster in enumerate(im.clusters):
        clusters.append({
            "index": j, "prob": im.cluster_probs[j],
            "classes": [{"id": int(c), "name": state.class_name(int(c)), "prob": prob[c]} for c in cluster],
            "map": f"/api/images/{i}/cwox/{j}.png?level={query_level}",
            "class_maps": [f"/api/images/{i}/cwox/{j}/{k}.png?level={query_level}" for k in range(len(cluster))]
            if len(cluster) > 1 else [],
        })
    return JSONResponse({"image": i, "level": level, "deep_layer": state.deep_layer,
                         "shallow_layer": state.shallow_layer, "clusters": clusters,
                         "tree": analysis.tree_source(state)})


def cwox_png(request: Request) -> Response:
    state, i, im = _cwox(request)
    j = int(request.path_params["cluster"])
    if not 0 <= j < len(im.clusters):
        raise LookupError(f"image {i} has clusters 0..{len(im.clusters) - 1}")
    k = request.path_params.get("member")
    if k is None:
        heat = im.cluster_maps[j]
    else:
        maps = im.class_maps[j]
        if maps is None or not 0 <= int(k) < len(maps):
            raise LookupError(f"cluster {j} of image {i} has no class map {k}")
        heat = maps[int(k)]
    return png(render.overlay(state.images.images[i], heat))


def _proposals(state: AppState, i: int) -> analysis.Proposals:
    return state.cache.get(("proposals", i), lambda: analysis.proposals(state, i))


def segments_json(request: Request) -> JSONResponse:
    """SLIC segments int[H][W], the proposed segment ids (best first), and those flagged because
    they lie on the explanation's own evidence (with each proposal's share of it)."""
    state, i = state_of(request), image_id(request)
    p = _proposals(state, i)
    return JSONResponse({"image": i, "height": state.images.height, "width": state.images.width,
                         "scale": render.scale_for(state.images.height), "segments": p.segments.tolist(),
                         "proposed": p.proposed, "flagged": p.flagged,
                         "evidence": {str(s): {"share": round(p.share[s], 4), "core": round(p.core[s], 4)}
                                      for s in p.proposed}})


def proposals_png(request: Request) -> Response:
    state, i = state_of(request), image_id(request)
    p = _proposals(state, i)
    return png(render.segments_png(state.images.images[i], p.segments, p.proposed, flagged=p.flagged))


def feedback_png(request: Request) -> Response:
    """The image with its stored feedback: irrelevant pixels red, relevant green (a thumbnail)."""
    state, i = state_of(request), image_id(request)
    irr, rel, _ = feedback_masks(state, i)
    return png(render.feedback_png(state.images.images[i], irr, rel))


def feedback_masks(state: AppState, i: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(irrelevant bool[H,W], relevant bool[H,W], rows) stored for image ``i`` (all annotators)."""
    h, w = state.images.height, state.images.width
    irr, rel = np.zeros((h, w), bool), np.zeros((h, w), bool)
    with state.store() as store:
        recs = store.records(i)
    for r in recs:
        if r["irrelevant"] and r["accepted"]:
            irr |= r["mask"]
        elif not r["irrelevant"] and r["accepted"]:
            rel |= r["mask"]
    return irr, rel & ~irr, len(recs)


def get_feedback(request: Request) -> JSONResponse:
    state, i = state_of(request), image_id(request)
    irr, rel, n = feedback_masks(state, i)
    return JSONResponse({"image": i, "rows": n, "irrelevant": irr.astype(np.uint8).tolist(),
                         "relevant": rel.astype(np.uint8).tolist()})


def parse_mask(value: Any, h: int, w: int, what: str) -> np.ndarray:
    """A 0/1 mask given as H lists of W numbers -> bool[H,W]; XgirError otherwise."""
    if value is None:
        return np.zeros((h, w), bool)
    if not isinstance(value, list) or len(value) != h or not all(isinstance(r, list) and len(r) == w for r in value):
        rows = len(value) if isinstance(value, list) else type(value).__name__
        raise XgirError(f"'{what}' must be a {h}x{w} mask (the image's size: {h} lists of {w} values 0/1), "
                        f"got {rows} rows")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise XgirError(f"'{what}' must hold only the numbers 0 and 1") from None
    if not np.isin(arr, (0, 1)).all():
        raise XgirError(f"'{what}' must hold only the numbers 0 and 1")
    return arr.astype(bool)


def save_feedback_sync(state: AppState, i: int, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise XgirError("the body must be a JSON object {irrelevant, relevant, annotator}")
    unknown = sorted(set(body) - {"irrelevant", "relevant", "annotator"})
    if unknown:
        raise XgirError(f"unknown field(s) {', '.join(unknown)}; send irrelevant, relevant, annotator")
    annotator = body.get("annotator") or state.annotator
    if not isinstance(annotator, str) or not NAME.fullmatch(annotator) or not annotator.strip():
        raise XgirError("annotator must be a name of 1-64 letters, digits, spaces or . @ - _")
    annotator = annotator.strip()  # as the store keeps it (the answer names it)
    h, w = state.images.height, state.images.width
    irr = parse_mask(body.get("irrelevant"), h, w, "irrelevant")
    rel = parse_mask(body.get("relevant"), h, w, "relevant") & ~irr
    records = []
    if irr.any():
        records.append(FeedbackRecord(i, 0, irr, True, annotator, irrelevant=True))
    if rel.any():
        records.append(FeedbackRecord(i, 1, rel, True, annotator, irrelevant=False))
    with state.store() as store:
        n = store.replace(i, annotator, records)
    return {"image": i, "saved": n, "irrelevant_pixels": int(irr.sum()), "relevant_pixels": int(rel.sum()),
            "annotator": annotator}


async def read_json(request: Request) -> Any:
    import json

    body = await request.body()
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise XgirError("the body is not valid JSON") from None
    except RecursionError:
        raise XgirError("the body is JSON nested too deeply; send a flat object") from None


async def post_feedback(request: Request) -> JSONResponse:
    state, i = state_of(request), image_id(request)
    body = await read_json(request)
    return JSONResponse(await run_in_threadpool(save_feedback_sync, state, i, body))


async def post_finetune(request: Request) -> JSONResponse:
    from xgir.app import finetune

    state = state_of(request)
    body = await read_json(request)
    params = await run_in_threadpool(finetune.validate, state, body or {})
    try:
        job = state.jobs.start(params, lambda job: finetune.run(state, params, job))
    except RuntimeError as err:
        return error(409, str(err))
    return JSONResponse({"job": job.id, "status": job.status, "url": f"/jobs/{job.id}"}, status_code=202)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a correction result."""
    keep = ("accuracy_eval", "accuracy_images", "overlap", "overlap_error")
    return {"params": result["params"], "annotated": result["annotated"], "checkpoint": result["checkpoint"],
            "load_with": result.get("load_with", ""),
            "ids": result["ids"], "weight": result.get("weight"),
            "before": {k: v for k, v in result["before"].items() if k in keep},
            "after": {k: v for k, v in result["after"].items() if k in keep}}


def job_json(request: Request) -> JSONResponse:
    job = state_of(request).jobs.get(int(request.path_params["job_id"]))
    out = job.public()
    if job.status == "done" and job.result is not None:
        out["result"] = summary(job.result)
    return JSONResponse(out)


def job_map_png(request: Request) -> Response:
    state = state_of(request)
    job = state.jobs.get(int(request.path_params["job_id"]))
    if job.result is None:
        raise LookupError(f"job {job.id} has no result yet")
    i, when, explainer = image_id(request), request.path_params["when"], request.path_params["explainer"]
    if i not in job.result["ids"]:
        raise LookupError(f"image {i} is not among the annotated images shown for job {job.id}")
    x = state.images.images[i]
    if when == "mask":
        with state.store() as store:
            masks, _ = store.feedback_masks()
        return png(render.mask_outline_png(x, masks[i].numpy()))
    maps = job.result.get(when, {}).get("maps", {}) if when in ("before", "after") else {}
    if explainer not in maps:
        raise LookupError(f"no {when} map '{explainer}' for job {job.id}")
    return png(render.overlay(x, maps[explainer][job.result["ids"].index(i)].abs()))
