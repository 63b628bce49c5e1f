"""HTML pages (Jinja2 templates; plain JavaScript in static/ does the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from xgir.app import analysis, api, finetune
from xgir.app.state import AppState

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PER_PAGE = 48


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    state: AppState = request.app.state.xgir
    base = {"model": state.loaded.spec, "images": state.images.spec, "count": len(state.images),
            "bayesian": state.bayesian, "feedback": str(state.feedback_path)}
    return templates.TemplateResponse(request, name, {**base, **context})


def gallery(request: Request) -> HTMLResponse:
    state, q = api.state_of(request), request.query_params
    cls, mis, sort = q.get("cls", ""), q.get("mis", ""), q.get("sort", "id")
    ids = api.select(state, cls, mis, sort)
    pages = max(1, -(-len(ids) // PER_PAGE))
    current = min(max(1, int(q.get("page", "1"))), pages)
    shown = ids[(current - 1) * PER_PAGE : current * PER_PAGE]
    with state.store() as store:
        asked = store.asked_images()
    rows = [{**api.row(state, i), "annotated": i in asked} for i in shown]
    query = {"cls": cls, "mis": mis, "sort": sort}
    return page(request, "gallery.html", rows=rows, page=current, pages=pages, total=len(ids), query=query,
                classes=list(enumerate(state.classes))[:1000], uncertainty_name=state.preds.uncertainty_name)


def _neighbours(state: AppState, i: int) -> tuple[int, int]:
    n = len(state.images)
    return (i - 1) % n, (i + 1) % n


def image_page(request: Request) -> HTMLResponse:
    state, i = api.state_of(request), api.image_id(request)
    prev, nxt = _neighbours(state, i)
    top = state.preds.probs[i].topk(min(5, state.preds.probs.shape[1]))
    topk = [(int(c), state.class_name(int(c)), float(p)) for p, c in zip(top.values, top.indices, strict=True)]
    return page(request, "image.html", row=api.row(state, i), prev=prev, next=nxt, topk=topk,
                menu=analysis.explainer_menu(), classes=list(enumerate(state.classes)),
                deep_layer=state.deep_layer, shallow_layer=state.shallow_layer,
                uncertainty_name=state.preds.uncertainty_name)


def annotate_page(request: Request) -> HTMLResponse:
    state, i = api.state_of(request), api.image_id(request)
    prev, nxt = _neighbours(state, i)
    return page(request, "annotate.html", row=api.row(state, i), prev=prev, next=nxt, annotator=state.annotator)


def finetune_page(request: Request) -> HTMLResponse:
    state = api.state_of(request)
    with state.store() as store:
        _, has = store.feedback_masks()
    jobs = [j.public() for j in reversed(list(state.jobs.jobs.values()))]
    from xgir.correct.guidance import ATTRIBUTIONS, LOSSES

    return page(request, "finetune.html", annotated=int(has.sum()), defaults=finetune.defaults(state),
                methods=finetune.METHODS, jobs=jobs, losses=LOSSES, attributions=ATTRIBUTIONS,
                eval_spec=state.eval_images.spec if state.eval_images is not None else None)


def job_page(request: Request) -> Response:
    state = api.state_of(request)
    job = state.jobs.get(int(request.path_params["job_id"]))
    if job.status == "done":
        return RedirectResponse(f"/results/{job.id}", status_code=303)
    return page(request, "job.html", job=job.public())


def results_page(request: Request) -> Response:
    state = api.state_of(request)
    job = state.jobs.get(int(request.path_params["job_id"]))
    if job.status != "done" or job.result is None:
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    res = api.summary(job.result)
    explainers = list(res["before"]["overlap"] or res["after"]["overlap"])
    shown = [e for e in ("Grad-CAM", "Saliency") if e in job.result["before"].get("maps", {})]
    rows = [{**api.row(state, i)} for i in res["ids"]]
    return page(request, "results.html", job=job.public(), res=res, explainers=explainers, shown=shown, rows=rows)
