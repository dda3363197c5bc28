"""The dashboard's HTTP routes: login, pages, JSON reads, the live event stream and `/metrics`."""

from __future__ import annotations

import asyncio
import json
import secrets
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...exception import Error
from ..logs import LogQuery
from ..observe import Observer
from . import views

COOKIE = "homeport_dashboard"
LOG_HISTORY = 2000  # lines a page starts with; the live stream adds to them
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
_NOT_LOGGED_IN = (
    "<!doctype html><title>Homeport</title><body style='font-family:sans-serif'>"
    "<h1>Not signed in</h1><p>Run <code>homeport dashboard</code> on the machine that runs Homeport: "
    "it prints a login link for this page.</p></body>"
)


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()  # (several at once: 3.11+)


def build_app(cp: views.ControlPlaneReads, obs: Observer, dashboard_token: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def signed_in(request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and secrets.compare_digest(given.encode(), dashboard_token.encode())

    @app.middleware("http")
    async def require_login(request: Request, call_next):
        if request.url.path == "/login" or signed_in(request):
            response = await call_next(request)
            response.headers["cache-control"] = "no-store"
            response.headers["x-frame-options"] = "DENY"
            response.headers["content-security-policy"] = (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
            return response
        if request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse({"error": "not signed in: run `homeport dashboard` for a login link"}, 401)
        return HTMLResponse(_NOT_LOGGED_IN, 401)

    @app.get("/login")
    async def login(token: str = "") -> Response:
        if not token or not secrets.compare_digest(token.encode(), dashboard_token.encode()):
            return HTMLResponse(_NOT_LOGGED_IN, 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, dashboard_token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/")
    async def index() -> Response:
        return HTMLResponse(_asset("index.html"))

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404)
        return Response(_asset(name), media_type=_STATIC[name])

    @app.get("/api/snapshot")
    async def snapshot() -> Any:
        return views.snapshot(cp)

    @app.get("/api/functions/{fid}")
    async def function(fid: str) -> Any:
        data = views.function(cp, obs, fid)
        if data is None:
            raise HTTPException(404, f"no function {fid}")
        return data

    @app.get("/api/calls")
    async def calls(q: str = "", status: str = "", function: str = "", limit: int = 200) -> Any:
        return obs.calls(q, status, function, min(max(limit, 1), 1000))

    @app.get("/api/calls/{call_id}")
    async def call(call_id: str) -> Any:
        rows = obs.call(call_id)
        if not rows:
            raise HTTPException(404, f"no finished call {call_id} in the history")
        return rows

    @app.get("/api/logs")
    async def logs(app_id: str = "", function: str = "", container: str = "", call: str = "", q: str = "") -> Any:
        query = LogQuery(app_id=app_id or None, function_id=function or None, container_id=container or None,
                         call_id=call or None, search=q or None, limit=LOG_HISTORY)
        return [{"at": e["ts"], "app_id": e["app_id"], "function": e["function"], "container_id": e["container_id"],
                 "stream": e["stream"], "call_id": e["call_id"], "text": e["data"]} for e in cp.log_lines(query)]

    @app.post("/api/apps/{name}/rollback")
    async def rollback(name: str, version: int | None = None) -> Any:
        """Deploy an earlier version of a deployed app again, as a new version (`homeport app rollback`).
        A POST with the SameSite=Strict cookie: another site cannot make a browser send it."""
        try:
            reply = await cp.rollback(name, version)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except Error as exc:
            raise HTTPException(400, str(exc)) from None
        return {"version": reply.get("version"), "from_version": reply.get("from_version")}

    @app.get("/api/storage")
    async def storage() -> Any:
        return views.storage(cp)

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        queue = obs.subscribe()

        async def stream():
            try:
                yield _event("snapshot", json.dumps(views.snapshot(cp), default=str))
                while True:
                    try:
                        kind, text = await asyncio.wait_for(queue.get(), 1.0)
                        yield _event(kind, text)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield _event("snapshot", json.dumps(views.snapshot(cp), default=str))
            finally:
                obs.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    @app.get("/metrics")
    async def metrics() -> Response:
        obs.flush()
        return Response(generate_latest(obs.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _event(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()
