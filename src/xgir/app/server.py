"""``create_app(state)``: the Starlette application (routes, error handling, the guard)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xgir.app import api, pages
from xgir.app.security import MAX_BODY, Guard
from xgir.app.state import AppState
from xgir.errors import XgirError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _respond(request: Request, status: int, message: str) -> Response:
    message = " ".join(str(message).split())[:300] or "error"
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status)
    from html import escape

    return HTMLResponse(f"<!doctype html><title>xgir: {status}</title><p>error: {escape(message)}</p>"
                        f"<p><a href='/'>gallery</a></p>", status_code=status)


async def on_user_error(request: Request, exc: Exception) -> Response:
    return _respond(request, 400, str(exc))


async def on_lookup(request: Request, exc: Exception) -> Response:
    return _respond(request, 404, str(exc.args[0]) if exc.args else "not found")


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _respond(request, exc.status_code, exc.detail if exc.status_code != 404 else "not found")


async def on_crash(request: Request, exc: Exception) -> Response:
    print(f"xgir app: internal error on {request.method} {request.url.path}: {type(exc).__name__}: {exc}",
          file=sys.stderr)
    return _respond(request, 500, "internal error; the server log has the details")


FAVICON = Path(__file__).parent / "static" / "favicon.svg"


async def favicon(request: Request) -> Response:
    return Response(FAVICON.read_bytes(), media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def routes() -> list[Any]:
    static = StaticFiles(directory=str(Path(__file__).parent / "static"))
    img = "/api/images/{image_id:int}"
    return [
        Route("/", pages.gallery),
        Route("/image/{image_id:int}", pages.image_page),
        Route("/annotate/{image_id:int}", pages.annotate_page),
        Route("/finetune", pages.finetune_page),
        Route("/jobs/{job_id:int}", pages.job_page),
        Route("/results/{job_id:int}", pages.results_page),
        Route("/api/images", api.list_images),
        Route(img + "/image.png", api.image_png),
        Route(img + "/explain.png", api.explain_png),
        Route(img + "/cwox", api.cwox_json),
        Route(img + "/cwox/{cluster:int}.png", api.cwox_png),
        Route(img + "/cwox/{cluster:int}/{member:int}.png", api.cwox_png),
        Route(img + "/segments", api.segments_json),
        Route(img + "/proposals.png", api.proposals_png),
        Route(img + "/feedback.png", api.feedback_png),
        Route("/api/progress/{token}", api.progress_json),
        Route("/favicon.ico", favicon),
        Route(img + "/feedback", api.get_feedback, methods=["GET"]),
        Route(img + "/feedback", api.post_feedback, methods=["POST"]),
        Route("/api/finetune", api.post_finetune, methods=["POST"]),
        Route("/api/jobs/{job_id:int}", api.job_json),
        Route("/api/jobs/{job_id:int}/maps/{image_id:int}/{when}/{explainer}.png", api.job_map_png),
        Mount("/static", static, name="static"),
    ]


def create_app(state: AppState, hosts: tuple[str, ...] | None = LOCAL_HOSTS, max_body: int = MAX_BODY) -> Guard:
    """The ASGI app serving ``state``; only requests naming one of ``hosts`` are answered (None: any)."""
    app = Starlette(routes=routes(), exception_handlers={
        XgirError: on_user_error, ValueError: on_user_error, OverflowError: on_user_error, LookupError: on_lookup,
        HTTPException: on_http, Exception: on_crash})
    app.state.xgir = state
    return Guard(app, hosts, max_body)
