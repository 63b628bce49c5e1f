"""An ASGI guard in front of the app: known Host names only (no DNS rebinding), requests from
another Origin refused (403), request bodies limited (413). Every refusal is one line of JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 4 * 1024 * 1024  # bytes: a 224 x 224 mask pair as JSON is ~0.2 MB


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Wraps an ASGI app; ``hosts``: the Host names accepted (e.g. 127.0.0.1, localhost), None: any
    (an app bound to all interfaces on purpose)."""

    def __init__(self, app: Callable, hosts: Iterable[str] | None, max_body: int = MAX_BODY) -> None:
        self.app, self.max_body = app, max_body
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.hosts is not None and _hostname(host).lower() not in self.hosts:
            return await refuse(send, 403, f"unexpected Host '{host[:100]}'; open the app at its printed URL")
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
            return await refuse(send, 403, "requests from another origin are refused")
        if headers.get("sec-fetch-site") == "cross-site":
            return await refuse(send, 403, "cross-site requests are refused")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await refuse(send, 400, "bad Content-Length header")
            if int(length) > self.max_body:
                return await refuse(send, 413, f"request body too large (limit {self.max_body} bytes)")
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # read the body first, bounded (also when sent chunked)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await refuse(send, 413, f"request body too large (limit {self.max_body} bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
