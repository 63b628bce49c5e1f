"""HTML pages (Jinja2 templates; plain JavaScript in static/ does the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from xgir.app import analysis, api, finetune
from xgir.app.menu import explainer_menu
from xgir.app.state import AppState

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PER_PAGE = 48


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    state: AppState = request.app.state.xgir
    from xgir import __version__

    base = {"version": __version__, "model": state.loaded.spec, "images": state.images.spec, "count": len(state.images),
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
    from urllib.parse import urlencode

    kept = {k: v for k, v in query.items() if v and not (k == "sort" and v == "id")}
    navqs = "?" + urlencode(kept) if kept else ""
    return page(request, "gallery.html", navqs=navqs, rows=rows, page=current, pages=pages, total=len(ids), query=query,
                classes=list(enumerate(state.classes))[:1000], uncertainty_name=state.preds.uncertainty_name)


def navigation(request: Request, state: AppState, i: int) -> dict[str, Any]:
    """prev / next image ids in the gallery's current filter and sort (the ``cls``, ``mis``, ``sort``
    query, carried on by every link as ``qs``), else in id order."""
    from urllib.parse import urlencode

    q = request.query_params
    query = {k: q[k] for k in ("cls", "mis", "sort") if q.get(k)}
    ids = api.select(state, query.get("cls", ""), query.get("mis", ""), query.get("sort", "id"))
    if i not in ids:  # an image outside the filter: id order
        ids, query = list(range(len(state.images))), {}
    pos = ids.index(i)
    return {"prev": ids[pos - 1], "next": ids[(pos + 1) % len(ids)], "qs": "?" + urlencode(query) if query else "",
            "position": f"{pos + 1} / {len(ids)}" + (f" ({query.get('sort', 'id')} order)" if query else "")}


def image_page(request: Request) -> HTMLResponse:
    state, i = api.state_of(request), api.image_id(request)
    top = state.preds.probs[i].topk(min(5, state.preds.probs.shape[1]))
    topk = [(int(c), state.class_name(int(c)), float(p)) for p, c in zip(top.values, top.indices, strict=True)]
    return page(request, "image.html", row=api.row(state, i), topk=topk, **navigation(request, state, i),
                menu=explainer_menu(state), classes=list(enumerate(state.classes)),
                deep_layer=state.deep_layer, shallow_layer=state.shallow_layer,
                uncertainty_name=state.preds.uncertainty_name, tree=analysis.tree_source(state),
                level=analysis.confusion_tree(state).default_level)


def annotate_page(request: Request) -> HTMLResponse:
    state, i = api.state_of(request), api.image_id(request)
    return page(request, "annotate.html", row=api.row(state, i), annotator=state.annotator,
                no_labels=finetune.label_problem(state), **navigation(request, state, i))


def finetune_page(request: Request) -> HTMLResponse:
    from xgir.app.annotations import annotation_rows

    state = api.state_of(request)
    problems = {m: finetune.problems(state, m) for m in finetune.METHODS}
    usable = [m for m in finetune.METHODS if not finetune.model_problem(state, m)]
    jobs = [j.public() for j in reversed(list(state.jobs.jobs.values()))]
    from xgir.correct.guidance import ATTRIBUTIONS, LOSSES

    return page(request, "finetune.html", annotations=annotation_rows(state), defaults=finetune.defaults(state),
                methods=finetune.METHODS, selected=usable[0] if usable else finetune.METHODS[0], problems=problems,
                model_problems={m: finetune.model_problem(state, m) for m in finetune.METHODS}, jobs=jobs,
                losses=LOSSES, attributions=ATTRIBUTIONS,
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
