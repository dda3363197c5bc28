"""Web endpoints of running apps: a gateway port per endpoint, container slots from the scheduler.

Every web endpoint is served at the root of its own URL, `http://127.0.0.1:<port>/`, so apps that
link to absolute paths work and no name resolution is needed (Python cannot resolve `*.localhost`).
The port belongs to the endpoint's *label* — `label=` if given, else `<app>-<function>` (with `-dev`
for ephemeral apps, as Modal does) — and is kept in the state database: the URL stays the same across
runs, redeploys and control-plane restarts. A label's first port is picked by hashing it into
`HOMEPORT_WEB_PORTS` (default 20000-29999, below the kernel's range for outgoing connections), then
probing upwards for a free one.

Each request is one input of the function's pool, with no prefetch: the scheduler assigns it to a
container with a free slot (starting containers as the queue grows, within `max_containers` and the
`@modal.concurrent` limits), and the gateway then forwards the request to that container's socket. A
stopped app's ports keep answering, with 404 and a body that says the app was stopped.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import _protocol as P
from .._names import object_name_problem
from ..exception import InvalidError
from .core.policy import InputIds
from .core.scheduler import Phase, Pool
from .gateway import Endpoint, Gateway, HTTPError, Upstream

if TYPE_CHECKING:
    from .observe import Observer
    from .records import FunctionRecord, Registry

log = logging.getLogger("homeport.server.web")
_TUNNEL_ABSTRACT = re.compile("\0homeport-fwd-[0-9a-f]{32}")
_MAX_TUNNELS = 16

DEFAULT_PORTS = (20000, 29999)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_ports (
    label TEXT PRIMARY KEY,
    port INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


# --- pure helpers ----------------------------------------------------------------------------------
def endpoint_label(app_name: str | None, tag: str, method: str | None, label: str | None, ephemeral: bool) -> str:
    """Modal's URL label: `label=`, else `<app>-<function>[-<method>]`, lower-case with dashes; `-dev`
    for an ephemeral app (`homeport run`/`serve`), so a deployed app keeps its own URL beside it."""
    base = label or "-".join(p for p in (app_name or "app", tag, method) if p)
    base = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "app"
    return f"{base}-dev" if ephemeral else base


def port_range(spec: str | None) -> tuple[int, int]:
    """`HOMEPORT_WEB_PORTS` as (first, last): "20000-29999"."""
    if not spec:
        return DEFAULT_PORTS
    first, _, last = spec.partition("-")
    lo, hi = int(first), int(last or first)
    if not 0 < lo <= hi < 65536:
        raise ValueError(f"HOMEPORT_WEB_PORTS must be a range like 20000-29999, got {spec!r}")
    return lo, hi


def preferred_port(label: str, ports: tuple[int, int]) -> int:
    lo, hi = ports
    digest = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")
    return lo + digest % (hi - lo + 1)


def candidate_ports(label: str, ports: tuple[int, int], stored: int | None) -> list[int]:
    """The label's stored port first, then its preferred port and the ones after it (wrapping)."""
    lo, hi = ports
    start = preferred_port(label, ports)
    out = [stored] if stored else []
    out += [lo + (start - lo + k) % (hi - lo + 1) for k in range(min(hi - lo + 1, 256))]
    return list(dict.fromkeys(out))


@dataclass
class Route:
    """One endpoint of a running app, as the gateway serves it on `port`."""

    label: str
    port: int
    app_id: str
    app_name: str | None
    key: str  # `function` or `Class.method`: how the SDK names it
    index: int  # which of the container's endpoint sockets
    fid: str  # the pool whose containers serve it (the current version's)
    timeout: float
    requires_auth: bool

    @property
    def name(self) -> str:
        return f"web endpoint '{self.key}' of app '{self.app_name or self.app_id}'"


class Scheduling(Protocol):
    """What the gateway asks of the control plane's executor (`executor.Executor`) for web requests."""

    input_ids: InputIds

    def pool(self, pool_id: str) -> Pool | None: ...
    def ready_containers(self, pool_id: str) -> list[str]: ...
    def submit_web_request(self, pool_id: str, iid: int, preferred: str | None) -> None: ...
    def web_request_done(self, cid: str, iid: int, t0: float) -> None: ...
    def cancel(self, pool_id: str, input_ids: set[int]) -> bool: ...


class WebEndpoints:
    def __init__(self, registry: Registry, executor: Scheduling, observer: Observer, db: Any,
                 host: str | None = None) -> None:
        self.apps = registry.apps
        self.functions = registry.functions
        self.containers = registry.containers
        self.executor = executor
        self.observer = observer
        self.db = db
        db.executescript(_SCHEMA)
        self.host = host or os.environ.get("HOMEPORT_WEB_HOST") or "127.0.0.1"
        self.ports = port_range(os.environ.get("HOMEPORT_WEB_PORTS"))
        self.gateway = Gateway(self.host)
        self.routes: dict[str, Route] = {}  # label -> route
        self.waiters: dict[int, tuple[asyncio.Future, str]] = {}  # web input id -> (future of the container id, pool)
        self._opened: dict[int, str] = {}  # gateway ports this control plane listens on -> their label
        self._start_failure: dict[str, str] = {}  # pool -> why its last container failed to start
        self.tunnels: dict[str, dict[int, str]] = {}  # container -> gateway port -> its relay socket
        self._tokens: dict[str, str] = dict(db.execute("SELECT token_id, secret_sha256 FROM proxy_tokens").fetchall())

    def url(self, port: int) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{port}"

    # --- publishing --------------------------------------------------------------------------------
    def plan(self, app: dict[str, Any], functions: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, int, dict]]:
        """(label, key, index, endpoint) of each web endpoint of these functions (`(tag, definition)`);
        raises `InvalidError` if a label is used twice in the app or by another running app. Called
        before an app's functions start, so that a refused deploy changes nothing."""
        ephemeral = app["state"] != "deployed"
        out: list[tuple[str, str, int, dict]] = []
        seen: dict[str, str] = {}
        for tag, definition in functions:
            for index, ep in enumerate(definition.get("web") or ()):
                method = ep.get("name")
                key = tag if method is None else f"{tag}.{method}"
                if ep.get("label") is not None and (why := object_name_problem(ep["label"], "web endpoint label")):
                    raise InvalidError(why)
                label = endpoint_label(app.get("name") or _module_stem(definition), tag, method, ep.get("label"),
                                       ephemeral)
                if label in seen:
                    raise InvalidError(
                        f"Web endpoints {seen[label]} and {key} of one app would share the URL label '{label}'; "
                        "give one of them another `label=`."
                    )
                seen[label] = key
                other = self.routes.get(label)
                # The same app again (a redeploy, a `homeport serve` reload) takes its URLs over; another
                # app may not take them.
                if other is not None and other.app_id in self.apps and other.app_id != app["app_id"] \
                        and other.app_name != app.get("name"):
                    raise InvalidError(
                        f"The URL label '{label}' of web endpoint {key} is in use by {other.name}. Give the "
                        "endpoint another `label=`, or stop that app first."
                    )
                out.append((label, key, index, ep))
        return out

    async def publish(self, app: dict[str, Any], functions: list[FunctionRecord]) -> dict[str, str]:
        """Serve the web endpoints of these functions (an app's current version); their URLs by key."""
        urls: dict[str, str] = {}
        by_tag = {fn.tag: fn for fn in functions}
        for label, key, index, ep in self.plan(app, [(fn.tag, fn.definition) for fn in functions]):
            fn = by_tag[key.split(".", 1)[0]]
            port = await self._open(label)
            route = Route(label, port, app["app_id"], app.get("name"), key, index, fn.function_id,
                          float(fn.defn.timeout), bool(ep.get("requires_proxy_auth")))
            if app["app_id"] not in self.apps:  # stopped while the port opened
                self.gateway.route(port, None, gone=f"{route.name} was stopped.")
                continue
            self.routes[label] = route
            self.gateway.route(port, self._endpoint(route))
            urls[key] = self.url(port)
            log.info("serving %s on %s", route.name, urls[key])
        return urls

    async def _open(self, label: str) -> int:
        current = self.routes.get(label)
        if current is not None:
            return current.port
        row = self.db.execute("SELECT port FROM web_ports WHERE label = ?", (label,)).fetchone()
        stored = row[0] if row else None
        if stored is not None and self._opened.get(stored) == label:
            return stored  # still listening since the label's app stopped
        # Ports other labels listen on (a stopped app's port keeps answering 404), or had: a label's
        # URL is its own for as long as the state database remembers it.
        taken = {p for p, other in self._opened.items() if other != label}
        taken |= {p for (p,) in self.db.execute("SELECT port FROM web_ports WHERE label != ?", (label,))}
        for port in candidate_ports(label, self.ports, stored):
            if port in taken:
                continue
            try:
                await self.gateway.open(port)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            self._opened[port] = label
            if port != stored:
                if stored:
                    log.warning("web endpoint %s: its port %d is taken; it moves to %d", label, stored, port)
                self.db.execute("INSERT OR REPLACE INTO web_ports(label, port, updated_at) VALUES (?, ?, ?)",
                                (label, port, time.time()))
            return port
        raise RuntimeError(f"no free port for web endpoint {label} in {self.ports[0]}-{self.ports[1]}")

    def url_of(self, app_id: str, key: str) -> str | None:
        """The URL of a running app's endpoint (`function` or `Class.method`)."""
        for route in self.routes.values():
            if route.app_id == app_id and route.key == key:
                return self.url(route.port)
        return None

    def stop_app(self, app_id: str, reason: str) -> None:
        """The app's ports answer 404 from now on (unless a newer app took the label over), and so do
        its requests still waiting for a container."""
        stopped = {}
        for label, route in list(self.routes.items()):
            if route.app_id == app_id:
                del self.routes[label]
                gone = f"{route.name} was stopped."
                self.gateway.route(route.port, None, gone=gone)
                stopped[route.fid] = gone
        for iid, (fut, fid) in list(self.waiters.items()):
            if fid in stopped:
                del self.waiters[iid]
                if not fut.done():
                    fut.set_exception(HTTPError(404, stopped[fid]))

    async def close(self) -> None:
        await self.gateway.close()

    # --- tunnels (`modal.forward`) -----------------------------------------------------------------
    async def tunnel(self, cid: str, web_prefix: str | None, msg: P.Tunnel) -> Any:
        """Open (or close) a gateway port that relays HTTP to a relay socket of container `cid`.

        The container names the socket; it must be the container's own: an abstract name with a random
        part (`\\0homeport-fwd-<hex>`), or a path next to its web sockets. Nothing else on this machine
        (the control plane's socket, another container's endpoints) can be put behind a URL this way."""
        mine = self.tunnels.setdefault(cid, {})
        op = msg.op
        if op == "close":
            port = msg.port
            if isinstance(port, int) and mine.pop(port, None) is not None:
                await self.gateway.close_port(port)
            return None
        if op != "open":
            raise InvalidError(f"unknown tunnel operation {op!r}")
        path = msg.path
        own = isinstance(path, str) and (
            _TUNNEL_ABSTRACT.fullmatch(path) is not None
            or (web_prefix is not None and path.startswith(web_prefix + "-fwd-")
                and re.fullmatch(r"[0-9a-f]{32}", path[len(web_prefix) + 5:]) is not None)
        )
        if not own or not isinstance(path, str):  # (`own` already says it is a str; mypy cannot see that)
            raise InvalidError("A tunnel relays only to the container's own relay socket (opened by modal.forward).")
        if len(mine) >= _MAX_TUNNELS:
            raise InvalidError(f"A container may have at most {_MAX_TUNNELS} tunnels open.")
        port = await self.gateway.open(0)
        name = f"tunnel to port {msg.port} of container {cid}"

        async def acquire() -> Upstream:
            return Upstream(socket_path=path, release=lambda: None)

        self.gateway.route(port, Endpoint(name=name, acquire=acquire, timeout=24 * 3600.0))
        mine[port] = path
        log.info("opened %s on %s", name, self.url(port))
        return {"url": self.url(port), "port": port}

    async def close_tunnels(self, cid: str) -> None:
        for port in list(self.tunnels.pop(cid, {})):
            await self.gateway.close_port(port)

    # --- admission ---------------------------------------------------------------------------------
    def _endpoint(self, route: Route) -> Endpoint:
        fn = self.functions.get(route.fid)
        web = (fn.defn.web or ()) if fn is not None else ()
        proxied = route.index < len(web) and web[route.index].get("type") in P.WEB_PROXIED
        return Endpoint(
            name=route.name,
            acquire=lambda: self._acquire(route),
            timeout=route.timeout,
            authorize=self.authorize if route.requires_auth else None,
            on_status=functools.partial(self.observer.gateway_request, route.label),
            acquire_session=(lambda session: self._acquire(route, session)) if proxied else None,
        )

    def _session_container(self, fid: str, session: bytes) -> str | None:
        """The container a session goes to: rendezvous hashing over the pool's ready containers, so that
        a session stays on its container while it lives and moves only when it goes."""
        return rendezvous(session, self.executor.ready_containers(fid))

    async def _acquire(self, route: Route, session: bytes | None = None) -> Upstream:
        fid = route.fid
        pool = self.executor.pool(fid)
        if pool is None:
            raise HTTPError(404, f"{route.name} is not running.")
        failure = self._start_failure.get(fid)
        if failure and pool.start_failures >= 2 and not any(c.phase is Phase.READY for c in pool.containers.values()):
            # Crash-looping: answer now with why, rather than wait out the restart back-off.
            raise HTTPError(503, f"{route.name} cannot start: {failure}")
        iid = self.executor.input_ids.web_request()
        fut = asyncio.get_running_loop().create_future()
        self.waiters[iid] = (fut, fid)
        preferred = self._session_container(fid, session) if session else None
        self.executor.submit_web_request(fid, iid, preferred)
        try:
            cid = await fut
        except asyncio.CancelledError:  # the client left while its request waited
            self.waiters.pop(iid, None)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._done(fut.result(), iid, time.monotonic())
            else:
                self.executor.cancel(fid, {iid})
            raise
        rec = self.containers.get(cid)
        if rec is None or rec.web_prefix is None:
            self._done(cid, iid, time.monotonic())
            raise HTTPError(502, f"{route.name}: its container {cid} is gone.")
        t0 = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._done(cid, iid, t0)

        return Upstream(socket_path=f"{rec.web_prefix}-{route.index}", release=release)

    def _done(self, cid: str, iid: int, t0: float) -> None:
        self.executor.web_request_done(cid, iid, t0)

    def assigned(self, cid: str, iid: int) -> None:
        """The scheduler gave input `iid`, which is no function input, to container `cid`: a web request
        goes through now; anything else (a request already answered, handed back to the queue when its
        container left) must not keep the container's slot."""
        fut, _fid = self.waiters.pop(iid, (None, ""))
        if fut is not None and not fut.done():
            fut.set_result(cid)
            self._start_failure.pop(_fid, None)
        else:  # its client left between the assignment and now, or it was answered already
            self._done(cid, iid, time.monotonic())

    def failed(self, iid: int, reason: str, start_failure: str | None = None) -> None:
        """A web request that can no longer be served (its app stopped, its container failed to start:
        `start_failure` says how; the traceback is in the app's log, not in an HTTP answer)."""
        fut, fid = self.waiters.pop(iid, (None, ""))
        if fut is None:
            return
        if start_failure is not None:
            self._start_failure[fid] = start_failure
            reason = f"{reason}: {start_failure}"
        if not fut.done():
            fut.set_exception(HTTPError(503, reason.rstrip()))

    # --- proxy auth --------------------------------------------------------------------------------
    def authorize(self, headers: list[tuple[bytes, bytes]]) -> bool:
        key = secret = None
        for name, value in headers:
            lname = name.lower()
            if lname == b"modal-key":
                key = value.decode("latin-1").strip()
            elif lname == b"modal-secret":
                secret = value.decode("latin-1").strip()
        if not key or not secret:
            return False
        expected = self._tokens.get(key)
        return expected is not None and secrets.compare_digest(expected, _sha256(secret))

    def create_token(self) -> dict[str, Any]:
        token_id, secret = f"wk-{secrets.token_urlsafe(12)}", f"ws-{secrets.token_urlsafe(24)}"
        now = time.time()
        self.db.execute("INSERT INTO proxy_tokens(token_id, secret_sha256, created_at) VALUES (?, ?, ?)",
                        (token_id, _sha256(secret), now))
        self._tokens[token_id] = _sha256(secret)
        return {"token_id": token_id, "token_secret": secret, "created_at": now}

    def list_tokens(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT token_id, created_at FROM proxy_tokens ORDER BY created_at").fetchall()
        return [{"token_id": t, "created_at": c} for t, c in rows]

    def delete_token(self, token_id: str) -> None:
        if self.db.execute("DELETE FROM proxy_tokens WHERE token_id = ?", (token_id,)).rowcount == 0:
            raise LookupError(f"no proxy token {token_id}")
        self._tokens.pop(token_id, None)


def rendezvous(session: bytes, containers: list[str]) -> str | None:
    """The container with the highest hash of (session, container): the same while it lives, and
    only the sessions of a container that goes (or a share of them, for one that comes) move."""
    if not containers:
        return None
    return max(containers, key=lambda cid: hashlib.blake2b(session + b"/" + cid.encode(), digest_size=8).digest())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _module_stem(definition: dict[str, Any]) -> str:
    path = definition.get("module_file")
    if path:
        return os.path.splitext(os.path.basename(path))[0]
    return (definition.get("module_name") or "app").rsplit(".", 1)[-1]
