"""One request and its response: `_Exchange`, from the request head to the end of the response."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

import httptools

from ._http import (
    _CONTINUE,
    _CRLF,
    _HOLD,
    _LAST_CHUNK,
    AUTH_MESSAGE,
    HOLD_LIMIT,
    NO_ENDPOINT,
    Endpoint,
    HTTPError,
    _connection_named,
    _plain,
    _Route,
    _without,
    log,
)
from ._upstream import _Upstream, _UpstreamHub


# What an exchange asks of the client connection it came on and of the gateway, as Protocols, so that
# this module does not import the client side or the gateway (they import it).
class _ExchangeHub(_UpstreamHub, Protocol):
    """What an exchange uses of its gateway: the routes, the loop and the upstream pool."""

    _loop: asyncio.AbstractEventLoop
    _routes: dict[int, _Route]

    def _pool_take(self, path: str) -> _Upstream | None: ...

    def _pool_put(self, conn: _Upstream) -> None: ...


class _Port(Protocol):
    """What an exchange uses of the listener it came through (`_client._Listener`)."""

    port: int
    tasks: set[asyncio.Task]


class _ClientConn(Protocol):
    """The client connection an exchange came on (`_client._Client`)."""

    transport: asyncio.Transport
    forwarded: bytes
    write_paused: bool
    parser: httptools.HttpRequestParser | None

    @property
    def gw(self) -> _ExchangeHub: ...

    @property
    def listener(self) -> _Port: ...

    def _pause(self, reason: int) -> None: ...

    def _resume(self, reasons: int) -> None: ...

    def _exchange_done(self, ex: _Exchange, keep: bool) -> None: ...


class _Exchange:
    """One request and its response, from the request head to the end of the response (or tunnel)."""

    __slots__ = (
        "chunked", "client", "close_after", "complete", "conn", "deadline", "done", "early", "endpoint",
        "expect", "has_body", "head", "head_sent", "headers", "held", "held_size", "http10", "keep_alive",
        "method", "release", "retried", "size", "task", "tunnel", "upgrade", "url", "websocket",
    )  # fmt: skip

    def __init__(self, client: _ClientConn) -> None:
        self.client = client
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.size = 0  # bytes of the head seen in whole items
        self.method: bytes | None = None  # set when the head is complete
        self.keep_alive = True
        self.http10 = False
        self.upgrade = False  # llhttp saw an upgrade request (or CONNECT)
        self.websocket = False
        self.chunked = False
        self.has_body = False
        self.expect = False
        self.complete = False  # the whole request was received
        self.held: list[bytes] | None = []  # body bytes waiting for an upstream; None once streaming
        self.held_size = 0
        self.early: list[bytes] = []  # tunnel bytes a client sent before the 101
        self.head = b""  # the request head as sent upstream
        self.endpoint: Endpoint | None = None
        self.task: asyncio.Task | None = None
        self.deadline = 0.0  # loop time by which the exchange must end, from its slot's acquisition (0: never)
        self.release: Callable[[], None] | None = None
        self.conn: _Upstream | None = None
        self.head_sent = False  # a final (or 101) response head went to the client
        self.close_after = False
        self.tunnel = False
        self.retried = False
        self.done = False

    # --- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        client = self.client
        route = client.gw._routes.get(client.listener.port)
        endpoint = route.endpoint if route is not None else None
        if route is None or endpoint is None:
            self.reply(404, route.gone if route is not None else NO_ENDPOINT)
            return
        self.endpoint = endpoint
        if endpoint.authorize is not None:
            try:
                allowed = endpoint.authorize(self.headers)
            except Exception:
                log.exception("authorize of %s failed", endpoint.name)
                self.reply(500, f"checking credentials for {endpoint.name} failed")
                return
            if not allowed:
                self.reply(401, AUTH_MESSAGE)
                return
        if not self._build_head(route):
            return
        self.task = client.gw._loop.create_task(self._open())

    def _build_head(self, route: _Route) -> bool:
        assert self.method is not None  # called once the head is complete
        drop = route.drop
        parts = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        connection: list[bytes] | None = None
        upgrade = None
        content_length = None
        for name, value in self.headers:
            lname = name.lower()
            if lname in drop:
                if lname == b"transfer-encoding":
                    self.chunked = value.lower().rstrip().endswith(b"chunked")
                elif lname == b"connection":
                    (connection := connection or []).append(value)
                elif lname == b"upgrade":
                    upgrade = value
                elif lname == b"expect":
                    self.expect = value.lower() == b"100-continue"
                continue
            if lname == b"content-length":
                content_length = value
            parts.append(name + b": " + value + _CRLF)
        if connection is not None:
            named = _connection_named(connection)
            if named:
                parts[4:] = _without(parts[4:], named)
        self.has_body = self.chunked or (content_length is not None and content_length.strip() != b"0")
        if self.upgrade:
            if self.method == b"CONNECT":
                self.reply(405, "CONNECT is not supported by the web endpoint gateway")
                return False
            self.websocket = upgrade is not None and upgrade.strip().lower() == b"websocket"
            if self.websocket and upgrade is not None:
                parts.append(b"connection: upgrade\r\nupgrade: " + upgrade + _CRLF)
            elif self.has_body:
                # llhttp hands the body of an upgrade request over as raw bytes, unframed.
                self.reply(501, "only WebSocket upgrades are supported; send this request without Upgrade")
                return False
            # Whatever the answer, llhttp has stopped parsing this connection: it ends with the exchange.
            self.close_after = True
        parts.append(route.extra)
        parts.append(self.client.forwarded)
        if self.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(_CRLF)
        self.head = b"".join(parts)
        return True

    async def _open(self) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        try:
            session = _session_id(self.headers) if endpoint.acquire_session is not None else None
            if session:
                upstream = await endpoint.acquire_session(session)  # type: ignore[misc]
            else:
                upstream = await endpoint.acquire()
        except HTTPError as e:
            self.task = None
            self.fail(e.status, e.message)
            return
        except Exception as e:
            log.exception("acquire for %s failed", endpoint.name)
            self.task = None
            self.fail(503, f"{endpoint.name} is unavailable: {e}")
            return
        if self.done:  # an acquire that ignored its cancellation: give its slot straight back
            upstream.release()
            return
        self.release = upstream.release
        # The function's `timeout` counts from here, as Modal counts it: the time queued for a slot and a
        # cold start (bounded by `startup_timeout` in the container) are not the function running.
        if endpoint.timeout and endpoint.timeout > 0:
            self.deadline = self.client.gw._loop.time() + endpoint.timeout
        await self._connect(upstream.socket_path, pooled=True)

    async def _connect(self, path: str, pooled: bool) -> None:
        gw = self.client.gw
        conn = gw._pool_take(path) if pooled else None
        reused = conn is not None
        if conn is None:
            try:
                if path.startswith("\0"):  # an abstract name (a `modal.forward` relay): uvloop takes only a socket
                    sock = _abstract_socket(path)
                    _, conn = await gw._loop.create_unix_connection(lambda: _Upstream(gw, path), sock=sock)
                else:
                    _, conn = await gw._loop.create_unix_connection(lambda: _Upstream(gw, path), path)
            except OSError as e:
                self.task = None
                self.fail(502, f"could not connect to {self.endpoint.name}: {e.strerror or e}")  # type: ignore[union-attr]
                return
        self.task = None
        self._attach(conn, reused)

    def _attach(self, conn: _Upstream, reused: bool) -> None:
        self.conn = conn
        conn.begin(self, reused)
        client = self.client
        if client.write_paused:
            conn.pause_reading()
        if self.expect and not self.complete and not self.http10:
            client.transport.write(_CONTINUE)
        held = self.held
        self.held = None  # from now on the body goes straight upstream
        if held:
            out = [self.head]
            if self.chunked:
                for piece in held:
                    out += (b"%x\r\n" % len(piece), piece, _CRLF)
            else:
                out += held
            if self.complete and self.chunked:
                out.append(_LAST_CHUNK)
            conn.transport.writelines(out)
        elif self.complete and self.chunked:
            conn.transport.write(self.head + _LAST_CHUNK)
        else:
            conn.transport.write(self.head)
        self.held_size = 0
        client._resume(_HOLD)

    def retry(self) -> None:
        """Send the request again on a fresh connection: its pooled one was closed before answering."""
        conn = self.conn
        assert conn is not None
        conn.ex = None
        self.conn = None
        self.retried = True
        self.held = []
        self.task = self.client.gw._loop.create_task(self._connect(conn.path, pooled=False))

    @property
    def retryable(self) -> bool:
        return not self.retried and not self.has_body

    # --- the tunnel ------------------------------------------------------------------------------
    def begin_tunnel(self) -> None:
        self.tunnel = True
        early, self.early = self.early, []
        if early:
            self.conn.transport.writelines(early)  # type: ignore[union-attr]
        self.client._resume(_HOLD)

    def tunnel_in(self, data: bytes) -> None:
        """Bytes from the client after an upgrade request's head."""
        if self.done:
            return
        if self.tunnel:
            self.conn.transport.write(data)  # type: ignore[union-attr]
        elif self.websocket or self.endpoint is None:
            self.early.append(data)
            self.held_size += len(data)
            if self.held_size > HOLD_LIMIT:
                self.client._pause(_HOLD)

    # --- ending ----------------------------------------------------------------------------------
    def response_done(self, reusable: bool) -> None:
        conn = self.conn
        if conn is not None and conn.head_request:
            # llhttp still waits for the body the HEAD response announced: the next one needs a fresh parser.
            conn.parser = httptools.HttpResponseParser(conn)
        keep = self.keep_alive and self.complete and not self.close_after
        self._finish(reusable and self.complete, keep)

    def told_status(self, status: int) -> None:
        endpoint = self.endpoint
        if endpoint is not None and endpoint.on_status is not None:
            endpoint.on_status(status)

    def reply(self, status: int, message: str) -> None:
        """Answer the client with the gateway's own response, then end the exchange."""
        self.told_status(status)
        client = self.client
        close = not (self.keep_alive and self.complete) or self.close_after or client.parser is None
        client.transport.write(_plain(status, message, close, head=self.method == b"HEAD"))
        self._finish(False, not close)

    def fail(self, status: int, message: str) -> None:
        """The exchange went wrong: say so if no response head went out yet, else cut the client off
        so that it sees a truncated response, never a silently complete one."""
        if self.done:
            return
        if self.head_sent:
            log.info("%s: %s", self.endpoint.name if self.endpoint else "gateway", message)
            self.client.transport.abort()
            self._finish(False, False)
        else:
            self.reply(status, message)

    def abort(self) -> None:
        if not self.done:
            self._finish(False, False)

    def timed_out(self) -> None:
        self.deadline = 0.0
        ep = self.endpoint
        assert ep is not None
        self.fail(504, f"{ep.name} did not answer within its timeout of {ep.timeout:g} s")

    def _finish(self, reuse: bool, keep: bool) -> None:
        if self.done:
            return
        self.done = True
        task = self.task
        if task is not None:
            # Still in acquire or connect. Kept until it has unwound, so that closing can wait for it.
            self.task = None
            task.cancel()
            tasks = self.client.listener.tasks
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.ex = None
            if reuse and not conn.lost:
                self.client.gw._pool_put(conn)
            else:
                conn.transport.abort()
        release = self.release
        if release is not None:
            self.release = None
            try:
                release()
            except Exception:
                log.exception("release for %s failed", self.endpoint.name if self.endpoint else "?")
        self.client._exchange_done(self, keep)


def _abstract_socket(name: str) -> socket.socket:
    """A connected Unix socket to an abstract name (connecting to a listening Unix socket does not block)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(name)
    except OSError:
        sock.close()
        raise
    return sock


def _session_id(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if len(name) == 16 and name.lower() == b"modal-session-id":
            return value.strip()[:256] or None
    return None
