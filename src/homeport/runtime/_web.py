"""Web endpoints inside a container: the HTTP servers the control plane's gateway forwards requests to.

Each endpoint of the container listens on its own Unix socket (`$HOMEPORT_WEB_SOCKET-<index>`), so
the gateway needs no routing inside the container and every app keeps its own lifespan:

- `fastapi_endpoint`: the user's function as the one route `/` of a FastAPI app (with Modal's CORS
  policy, and `/docs` when asked for), served by uvicorn;
- `asgi_app` / `wsgi_app`: the app the user's function returns (WSGI through a2wsgi), served by uvicorn;
- `web_server` / server classes: the user's own server on a TCP port of the container's private
  network; a byte bridge carries each gateway connection to it. Where the machine cannot give the
  container a network of its own, the port is the machine's, and `claim_ports` makes sure it is this
  container's alone rather than letting replicas share one server unseen.

The servers run on an event loop in a thread of their own, so the main thread keeps the usual input
loop (a class may have `@modal.method`s next to its web endpoints) and its signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import socket
import threading
import time
from typing import Any

from .. import _protocol as P
from .._wire import relay

PORT_POLL_SECONDS = 0.01
STOP_GRACE_SECONDS = 5.0
_READY_TIMEOUT = 60.0  # uvicorn's own start-up (an app's lifespan start-up is the user's to bound)
# a2wsgi's thread pool, as Modal sizes it. Threads start only as requests need them; the bound matters
# when handlers outlive their requests (a client that left cannot stop a WSGI thread), which must not
# leave later requests queued behind them.
WSGI_WORKERS = 10000


class WebStartError(Exception):
    """The container's web server could not start; the message says why and what to change."""


def socket_path(prefix: str, index: int) -> str:
    return f"{prefix}-{index}"


def fastapi_app(fn: Any, config: dict[str, Any]) -> Any:
    """Modal's `fastapi_endpoint` wrapper: one route, CORS open to every origin, docs when asked for."""
    try:
        from fastapi import FastAPI
        from fastapi.middleware.cors import CORSMiddleware
    except ImportError:  # the runtime brings FastAPI; an image can only shadow it with a broken one
        raise WebStartError(
            "Functions decorated with `fastapi_endpoint` require FastAPI to be installed in the image; "
            "add `.pip_install(\"fastapi[standard]\")` to it."
        ) from None
    docs = bool(config.get("docs"))
    app = FastAPI(openapi_url="/openapi.json" if docs else None, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                       allow_credentials=True)
    app.add_api_route("/", fn, methods=[config.get("method") or "GET"])
    return app


def _accepts(port: int) -> bool:
    """Whether something accepts connections on the port (in this container's network)."""
    for host in ("127.0.0.1", "::1"):
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=0.5).close()
            return True
    return False


def _wait_for_port(port: int, timeout: float, what: str) -> None:
    """Until something accepts connections on the port (in this container's network)."""
    deadline = time.monotonic() + timeout
    while True:
        if _accepts(port):
            return
        if time.monotonic() >= deadline:
            raise WebStartError(
                f"{what} did not start listening on port {port} within {timeout:g}s (startup_timeout="
                f"{timeout:g}). Make sure it listens on port {port} (on 0.0.0.0 or 127.0.0.1), or raise "
                "`startup_timeout`."
            )
        time.sleep(PORT_POLL_SECONDS)


_claims: dict[int, socket.socket] = {}  # port -> this container's hold on it, for its whole life


def claim_ports(endpoints: list[dict[str, Any]], server_started: bool = False) -> None:
    """Make sure that the ports of this container's own servers (`web_server`, server classes) are its
    alone, where it has no network of its own (the backend sets `ENV_PRIVATE_NETWORK` only when it gave
    it one); raise `WebStartError` saying what to change if one is not.

    Without this a replica would take another container's server, listening on the machine's port,
    for its own: all of them would report ready, and one container's server would answer for all.
    To be run before the user's server starts. A replica starting at the same moment is told apart
    by a hold, an abstract Unix socket named after the port: its names are per network namespace,
    like the port, and it goes with the process. `server_started`: the server already runs (started
    by the enter hooks), so only the hold is taken."""
    if os.environ.get(P.ENV_PRIVATE_NETWORK) == "1":
        return
    for endpoint in endpoints:
        if endpoint["type"] not in P.WEB_PROXIED or int(endpoint["port"]) in _claims:
            continue
        port = int(endpoint["port"])
        hold = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            hold.bind(f"\0homeport-web-port-{port}")
        except OSError:
            hold.close()
            raise WebStartError(_port_taken(port, "another container on this machine serves it")) from None
        if not server_started and _accepts(port):
            hold.close()
            raise WebStartError(_port_taken(port, "another program on this machine already listens on it"))
        _claims[port] = hold


def _port_taken(port: int, why: str) -> str:
    return (
        f"The web server's port {port} is not free: {why}. This container has no network of its own "
        "(bubblewrap is not installed, or cannot create namespaces here), so it shares the machine's "
        "network with every other container and program. Install bubblewrap (Debian/Ubuntu: "
        "`apt-get install bubblewrap`) so that each container gets its own network, or run one "
        f"container of this function at a time (`max_containers=1`) with port {port} free."
    )


def _bind(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _bridge(port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    await relay(client_reader, client_writer, lambda: asyncio.open_connection("127.0.0.1", port))


class WebServers:
    """The container's web endpoints, served from a background event loop until `stop`."""

    def __init__(self, tag: str, endpoints: list[dict[str, Any]], prefix: str, max_inputs: int) -> None:
        self.tag = tag
        self.endpoints = endpoints
        self.prefix = prefix
        self.max_inputs = max_inputs
        self._servers: list[Any] = []  # uvicorn servers
        self._tasks: list[asyncio.Future] = []  # their `serve()` tasks
        self._bridges: list[asyncio.Server] = []
        self._sockets: list[socket.socket] = []  # the listening sockets, closed when the loop ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._done: asyncio.Future | None = None

    def start(self, service: Any, timeline: dict[str, float]) -> None:
        """Build each endpoint's app (calling `asgi_app`/`wsgi_app`/`web_server` functions), start the
        servers and return once every socket accepts connections; raise `WebStartError` if one cannot."""
        _extend_path()
        apps: list[tuple[str, Any]] = []  # (socket path, ASGI app or ("bridge", port))
        for index, endpoint in enumerate(self.endpoints):
            t = time.monotonic()
            name = endpoint.get("name")
            kind = endpoint["type"]
            qualname = self.tag if name is None else f"{self.tag}.{name}"
            what = f"The web server of '{qualname}'"
            if kind == "server":
                target: Any = None  # the enter hooks started it
            elif name is None:
                target = service.callables[None]
            else:
                target = getattr(service.instance, name)
            if kind == "fastapi_endpoint":
                app: Any = fastapi_app(target, endpoint)
            elif kind == "asgi_app":
                app = _Lifespan.around(_factory_app(target(), kind, qualname), what)
            elif kind == "wsgi_app":
                from a2wsgi import WSGIMiddleware

                app = WSGIMiddleware(_factory_app(target(), kind, qualname), workers=WSGI_WORKERS)
            else:
                claim_ports([endpoint], server_started=target is None)
                if target is not None:
                    target()
                _wait_for_port(endpoint["port"], float(endpoint.get("startup_timeout") or 5.0), what)
                app = ("bridge", endpoint["port"])
            apps.append((socket_path(self.prefix, index), app))
            timeline[f"web:{name or kind}"] = time.monotonic() - t
        self._thread = threading.Thread(target=self._run, args=(apps,), name="homeport-web", daemon=True)
        self._thread.start()
        if not self._ready.wait(_READY_TIMEOUT):
            raise WebStartError(f"The web server of '{self.tag}' did not start within {_READY_TIMEOUT:g}s.")
        if self._error is not None:
            raise self._error

    def _run(self, apps: list[tuple[str, Any]]) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(apps))
        except BaseException as exc:  # a lifespan start-up failure exits uvicorn with SystemExit(3)
            for task in self._tasks:  # retrieved here, so that nothing is reported as never retrieved
                if task.done() and not task.cancelled():
                    task.exception()
            if not self._ready.is_set():
                self._error = self._start_error(apps, exc)
                self._ready.set()
        finally:
            loop.close()
            for sock in self._sockets:  # those of servers that never started (a failed lifespan)
                sock.close()

    def _start_error(self, apps: list[tuple[str, Any]], exc: BaseException | None) -> WebStartError:
        """Why the servers did not start: the user's own exception when an app's lifespan start-up
        failed (uvicorn only logs it and exits), else what uvicorn raised."""
        for _path, app in apps:
            if isinstance(app, _Lifespan) and app.failed is not None:
                if app.exc is not None:
                    error = WebStartError(f"{app.what} failed to start: its ASGI lifespan start-up raised {app.exc!r}")
                    error.__cause__ = app.exc
                else:
                    error = WebStartError(f"{app.what} failed to start: its ASGI lifespan start-up failed: "
                                          f"{app.failed.strip() or 'no reason given'}")
                return error
        error = WebStartError(f"The web server of '{self.tag}' failed to start: {exc!r}")
        error.__cause__ = exc
        return error

    async def _serve(self, apps: list[tuple[str, Any]]) -> None:
        import uvicorn

        self._done = asyncio.get_running_loop().create_future()
        tasks = self._tasks
        for path, app in apps:
            sock = _bind(path)
            self._sockets.append(sock)
            if isinstance(app, tuple):
                port = app[1]
                bridge = await asyncio.start_unix_server(functools.partial(_bridge, port), sock=sock)
                self._bridges.append(bridge)
                continue
            config = uvicorn.Config(
                app, log_config=None, access_log=False, lifespan="off" if isinstance(app, _wsgi()) else "auto",
                http="httptools" if _has("httptools") else "h11", ws="auto",
                # The gateway is the only client and pools its connections: keep them open.
                timeout_keep_alive=3600, timeout_graceful_shutdown=STOP_GRACE_SECONDS,  # type: ignore[arg-type]  # uvicorn annotates int; it is a float timeout
                # The gateway is the edge and replaces X-Forwarded-For/-Proto with what it saw, so they are
                # trusted: `request.client.host` is the real client's address (a Unix socket has none).
                proxy_headers=True, forwarded_allow_ips="*",
            )
            server = uvicorn.Server(config)
            self._servers.append(server)
            tasks.append(asyncio.ensure_future(server.serve(sockets=[sock])))
        while not all(s.started for s in self._servers):
            failed = next((t for t in tasks if t.done()), None)
            if failed is not None:
                self._error = self._start_error(apps, failed.exception() if not failed.cancelled() else None)
                self._ready.set()
                return
            await asyncio.sleep(0.002)
        self._ready.set()
        await self._done
        for server in self._servers:
            server.should_exit = True
        for bridge in self._bridges:
            bridge.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Stop taking requests, let those in flight finish (a few seconds at most), run lifespan shutdown."""
        loop, done = self._loop, self._done
        if loop is None or done is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(lambda: None if done.done() else done.set_result(None))
        self._thread.join(STOP_GRACE_SECONDS + 2)


def _factory_app(app: Any, kind: str, qualname: str) -> Any:
    """What an `asgi_app`/`wsgi_app` function returned, if it is an app (else every request would be a 500)."""
    if not callable(app):
        protocol = "ASGI" if kind == "asgi_app" else "WSGI"
        raise WebStartError(
            f"The `@modal.{kind}()` function '{qualname}' returned {type(app).__name__} "
            f"({_short(app)}), not an {protocol} app: return the app itself, e.g. `return web_app` at its end."
        )
    return app


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Lifespan:
    """An ASGI app as uvicorn serves it, keeping what made its lifespan start-up fail: uvicorn only logs
    that and exits with `SystemExit(3)`, which says nothing to whoever reads the error."""

    __slots__ = ("app", "exc", "failed", "what")

    def __init__(self, app: Any, what: str) -> None:
        self.app = app
        self.what = what
        self.failed: str | None = None  # the app sent `lifespan.startup.failed` (with this message)
        self.exc: BaseException | None = None  # what the app raised in its lifespan (Starlette re-raises)

    @classmethod
    def around(cls, app: Any, what: str) -> Any:
        # An ASGI 2 app (a callable that returns the coroutine function) is left to uvicorn's adapter.
        asgi3 = inspect.iscoroutinefunction(app) or (
            not inspect.isclass(app) and inspect.iscoroutinefunction(type(app).__call__))
        return cls(app, what) if asgi3 else app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def watch(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.failed = message.get("message") or ""
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException as exc:  # also where an app without lifespan support says so (not a failure)
            self.exc = exc
            raise


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _wsgi() -> type:
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError:
        return type(None)
    return WSGIMiddleware


def _extend_path() -> None:
    """The web servers' packages, after the image's own. A container forked from a template inherits
    the template's `sys.path`, made from the plain runtime path before this container's was known."""
    import sys

    for path in os.environ.get(P.ENV_RUNTIME_PATH, "").split(os.pathsep):
        if path and path not in sys.path:
            sys.path.append(path)


def prefix_from_env() -> str:
    return os.environ[P.ENV_WEB_SOCKET]


def loopback_up() -> None:
    """Bring up `lo` in a fresh network namespace (`_newroot.loopback_up`)."""
    from ._newroot import loopback_up as up

    up()
