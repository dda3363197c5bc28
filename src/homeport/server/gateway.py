"""The control plane's HTTP gateway: one TCP port per web endpoint, reverse-proxied to containers.

Each web endpoint's containers serve HTTP/1.1 on a Unix socket. The gateway listens on a host port per
endpoint and, for every request, asks the control plane for a container (`Endpoint.acquire`, which may
queue), forwards the exchange and gives the slot back (`Upstream.release`) when it ends, however it ends.

Why a byte-level reframing proxy rather than an ASGI app in front of an HTTP client: the gateway runs in
the control plane's event loop and is on the path of every request, so it must add as little as
possible. It parses heads with httptools (llhttp, in C) through `asyncio.Protocol` callbacks, with no
task switch per chunk, and forwards bodies as the bytes they are. Only the framing is rewritten where
the two sides need different framing: hop-by-hop headers go, a chunked request body is re-chunked after
llhttp decodes it, and a response whose length is unknown reaches HTTP/1.1 clients chunked so that the
client connection can be kept.

Nothing is buffered whole. A side stops being read while the transport its bytes go to is above its
write high-water mark (`pause_writing`) and is read again when that drains (`resume_writing`), so a
100 MB upload or download costs a few buffers of memory. The few request bytes read before a container
is ready are held, and reading stops when they pass `HOLD_LIMIT`.

Upstream connections are pooled per socket path and reused only after a complete keep-alive response on
an exchange without error; a request on a reused connection that the container closed before answering
(its keep-alive timeout racing ours) is sent once more on a fresh connection when it has no body.

A client connection runs one exchange at a time. Requests pipelined behind it are parsed (llhttp cannot
stop mid-buffer) and wait in order, and the client is not read while one waits, which bounds what they
hold to one read.

Every exchange ends in `_Exchange._finish`, whichever way it ends (response complete, gateway answer,
timeout, either side gone, `close`): that is where the upstream connection is pooled or closed, the
acquire task cancelled and `release` called, once. One sweeper task per gateway enforces deadlines and
closes idle client connections, instead of a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

log = logging.getLogger("homeport.gateway")

MAX_HEAD = 64 * 1024  # request line and headers; more is answered 431
HOLD_LIMIT = 64 * 1024  # request bytes held while no upstream can take them yet
POOL_MAX_IDLE = 128  # idle upstream connections kept per socket path
CLIENT_IDLE_SECONDS = 75.0  # a client connection between requests is closed after this long
LINGER_SECONDS = 5.0  # how long the rest of a request answered early is read (and dropped) before closing

AUTH_MESSAGE = "missing or invalid proxy auth credentials: send the Modal-Key and Modal-Secret headers"
NO_ENDPOINT = "no web endpoint is served on this port"

# Headers that describe one hop, not the message: never forwarded as received.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# The gateway is the edge, so what a client claims about forwarding is replaced, not trusted.
_REQUEST_DROP = _HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-proto"}
_RESPONSE_SPECIAL = _HOP | {b"content-length"}
# Connection tokens that name no other header (or one dropped anyway).
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})

_CRLF = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Why the client is not being read (a bit each): reading resumes when none is left.
_HOLD, _PIPELINE, _UPSTREAM_FULL = 1, 2, 4
# Upstream response states.
_HEAD, _BODY, _DONE, _TUNNEL = 0, 1, 2, 3


@dataclass
class Upstream:
    socket_path: str  # Unix socket of the chosen container's HTTP server
    release: Callable[[], None]  # called exactly once when this exchange ends, however it ends


class HTTPError(Exception):
    """Raised by `Endpoint.acquire` to answer the client without a container."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass
class Endpoint:
    name: str  # for messages, e.g. "app 'shop' function 'api'"
    # A container slot; may wait (queued). Cancelled if the client leaves: it must then hold no slot.
    acquire: Callable[[], Awaitable[Upstream]]
    timeout: float = 300.0  # seconds for one whole exchange, from its request head to its response's end
    authorize: Callable[[list[tuple[bytes, bytes]]], bool] | None = None  # None: no auth; False -> 401
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()  # added to the request sent upstream


class _Route:
    __slots__ = ("drop", "endpoint", "extra", "gone")

    def __init__(self, endpoint: Endpoint | None, gone: str) -> None:
        self.endpoint = endpoint
        self.gone = gone or NO_ENDPOINT
        extra = endpoint.extra_headers if endpoint is not None else ()
        # Clients must not be able to forge what the gateway adds.
        self.drop = _REQUEST_DROP | {name.lower() for name, _ in extra}
        self.extra = b"".join(name + b": " + value + _CRLF for name, value in extra)


class _Listener:
    __slots__ = ("clients", "closed", "port", "server", "tasks")

    def __init__(self) -> None:
        self.closed = False
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.clients: set[_Client] = set()
        self.tasks: set[asyncio.Task] = set()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _plain(status: int, message: str, close: bool, head: bool = False) -> bytes:
    """A response of the gateway's own: a plain-text sentence saying what happened."""
    body = message.encode() + b"\n"
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _reason(status)),
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n" if close else _CRLF,
        b"" if head else body,
    ))


def _connection_named(values: list[bytes]) -> set[bytes]:
    """The header names that Connection header values list as hop-by-hop (beyond the usual tokens)."""
    names = {t.strip().lower() for v in values for t in v.split(b",")}
    return names - _PLAIN_TOKENS


def _without(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """Header lines of `parts` whose names are not in `names` (the rare second pass for Connection)."""
    return [p for p in parts if p.split(b":", 1)[0].lower() not in names]


class _HeadTooLarge(Exception):
    pass


class _Exchange:
    """One request and its response, from the request head to the end of the response (or tunnel)."""

    __slots__ = (
        "chunked", "client", "close_after", "complete", "conn", "deadline", "done", "early", "endpoint",
        "expect", "has_body", "head", "head_sent", "headers", "held", "held_size", "http10", "keep_alive",
        "method", "release", "retried", "size", "task", "tunnel", "upgrade", "url", "websocket",
    )  # fmt: skip

    def __init__(self, client: _Client) -> None:
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
        self.deadline = 0.0  # loop time by which the exchange must end (0: never)
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
        if endpoint is None:
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
        loop = client.gw._loop
        if endpoint.timeout and endpoint.timeout > 0:
            self.deadline = loop.time() + endpoint.timeout
        self.task = loop.create_task(self._open())

    def _build_head(self, route: _Route) -> bool:
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
            if self.websocket:
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
        await self._connect(upstream.socket_path, pooled=True)

    async def _connect(self, path: str, pooled: bool) -> None:
        gw = self.client.gw
        conn = gw._pool_take(path) if pooled else None
        reused = conn is not None
        if conn is None:
            try:
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

    def reply(self, status: int, message: str) -> None:
        """Answer the client with the gateway's own response, then end the exchange."""
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


class _Client(asyncio.Protocol):
    """One client connection: parses its requests and runs their exchanges one at a time, in order."""

    def __init__(self, gateway: Gateway, listener: _Listener) -> None:
        self.gw = gateway
        self.listener = listener
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.forwarded = b""
        self.cur: _Exchange | None = None  # the request the parser is filling
        self.last: _Exchange | None = None  # the request whose message ended last
        self.active: _Exchange | None = None
        self.queue: deque[_Exchange] = deque()
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.advancing = False
        self.error: tuple[int, str] | None = None  # a malformed request, answered in its turn
        self.head_fed = 0
        self.seen = 0.0
        self.lingering = 0.0  # loop time until which a closing connection is drained

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.listener.closed:  # accepted just before its port closed
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        self.forwarded = b"x-forwarded-for: " + ip.encode() + b"\r\nx-forwarded-proto: http\r\n"
        self.listener.clients.add(self)
        self.gw._live.add(self)
        self.seen = self.gw._loop.time()

    def data_received(self, data: bytes) -> None:
        self.seen = self.gw._loop.time()
        parser = self.parser
        if parser is None:  # past an upgrade request's head (or a malformed request): raw bytes
            ex = self.last
            if ex is not None and ex.upgrade:
                ex.tunnel_in(data)
            return
        cur = self.cur
        in_head = cur is not None and cur.method is None
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.parser = None
            tail = data[e.args[0] :]
            if tail and self.last is not None:
                self.last.tunnel_in(tail)
        except httptools.HttpParserError as e:
            if self.error is None:
                self.error = (400, f"malformed HTTP request: {e}")
            self._malformed()
            return
        else:
            # llhttp keeps a header it has not finished inside itself: bound that too.
            cur = self.cur
            if in_head and cur is not None and cur.method is None:
                self.head_fed += len(data)
                if self.head_fed > MAX_HEAD:
                    self.error = (431, f"request head over {MAX_HEAD // 1024} KiB")
                    self._malformed()
                    return
        if self.queue:
            self._advance()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is a gone client: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.gw._live.discard(self)
        self._gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.resume_reading()

    # --- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.cur = _Exchange(self)
        self.head_fed = 0

    def on_url(self, url: bytes) -> None:
        ex = self.cur
        ex.url += url  # type: ignore[union-attr]
        ex.size += len(url)  # type: ignore[union-attr]
        if ex.size > MAX_HEAD:  # type: ignore[union-attr]
            self.error = (431, f"request target over {MAX_HEAD // 1024} KiB")
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.cur
        ex.headers.append((name, value))  # type: ignore[union-attr]
        ex.size += len(name) + len(value) + 4  # type: ignore[union-attr]
        if ex.size > MAX_HEAD:  # type: ignore[union-attr]
            self.error = (431, f"request headers over {MAX_HEAD // 1024} KiB")
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        ex = self.cur
        assert ex is not None and self.parser is not None
        parser = self.parser
        ex.method = parser.get_method()
        ex.keep_alive = parser.should_keep_alive()
        ex.http10 = parser.get_http_version() == "1.0"
        ex.upgrade = parser.should_upgrade()
        # Started after this read is parsed, so that its body bytes go upstream with the head.
        self.queue.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.cur
        assert ex is not None
        if ex.held is None:
            if ex.done:
                return  # its exchange already ended (the connection closes after it)
            transport = ex.conn.transport  # type: ignore[union-attr]
            if ex.chunked:
                transport.writelines((b"%x\r\n" % len(body), body, _CRLF))
            else:
                transport.write(body)
        elif not ex.done:
            ex.held.append(body)
            ex.held_size += len(body)
            if ex.held_size > HOLD_LIMIT:
                self._pause(_HOLD)

    def on_message_complete(self) -> None:
        ex = self.cur
        assert ex is not None
        self.cur = None
        self.last = ex
        ex.complete = True
        if ex.held is None and not ex.done and ex.chunked:
            ex.conn.transport.write(_LAST_CHUNK)  # type: ignore[union-attr]

    # --- running exchanges -----------------------------------------------------------------------
    def _advance(self) -> None:
        """Start the next request if none is in flight; answer a malformed one when its turn comes."""
        if self.advancing:
            return  # an exchange that ended inside start(): the loop below picks up the next one
        self.advancing = True
        try:
            while self.active is None and not self.closed:
                if self.queue:
                    ex = self.active = self.queue.popleft()
                    ex.start()
                elif self.error is not None:
                    status, message = self.error
                    self.error = None
                    self.transport.write(_plain(status, message, close=True))
                    self._close(drain=True)
                else:
                    break
        finally:
            self.advancing = False
        if self.queue:
            self._pause(_PIPELINE)
        else:
            self._resume(_PIPELINE)

    def _exchange_done(self, ex: _Exchange, keep: bool) -> None:
        if self.active is ex:
            self.active = None
        if self.closed:
            return
        self._resume(_UPSTREAM_FULL | _HOLD)
        if not keep:
            self._close(drain=not ex.complete)
            return
        self._advance()

    def _close(self, drain: bool) -> None:
        """Close after what was written. If request bytes may still be coming, first end our side (FIN)
        and read and drop them for a while: closing a socket with unread bytes makes the kernel answer
        with a reset, and the client would see that instead of the response (say a 401 to an upload)."""
        self.closed = True
        self.queue.clear()
        self.parser = None  # from now on data_received drops what comes
        self.last = None
        transport = self.transport
        if drain and not transport.is_closing() and transport.can_write_eof():
            self.lingering = self.gw._loop.time() + LINGER_SECONDS
            self.paused = 0
            transport.resume_reading()
            transport.write_eof()
        else:
            transport.close()

    def _malformed(self) -> None:
        """The parser failed on the request it was filling: that request is answered, the rest dropped."""
        self.parser = None
        ex = self.cur
        self.cur = None
        if ex is not None:
            if ex is self.active:
                status, message = self.error  # type: ignore[misc]
                self.error = None
                ex.close_after = True
                ex.fail(status, message)
                return
            if ex in self.queue:
                self.queue.remove(ex)
        self._advance()

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reasons: int) -> None:
        if self.paused and not self.paused & ~reasons:
            self.paused = 0
            if not self.closed:
                self.transport.resume_reading()
        else:
            self.paused &= ~reasons

    def _gone(self) -> None:
        self.closed = True
        self.listener.clients.discard(self)
        self.queue.clear()
        ex = self.active
        if ex is not None:
            ex.abort()

    def shutdown(self) -> None:
        self.transport.abort()
        self.closed = True
        self._gone()


class _Upstream(asyncio.Protocol):
    """A connection to a container's HTTP server; carries one exchange at a time, pooled in between."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gw = gateway
        self.path = path
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.ex: _Exchange | None = None
        self.lost = False
        self.reading_paused = False
        self.out: list[bytes] = []
        self.reused = False
        self.begin(None, False)

    def begin(self, ex: _Exchange | None, reused: bool) -> None:
        self.ex = ex
        self.reused = reused
        self.state = _HEAD
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.answered = False  # any response byte arrived
        self.chunked_out = False
        self.eof_framed = False
        self.head_request = ex is not None and ex.method == b"HEAD"
        self.keep = False
        self.dirty = False

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.lost:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.gw._live.add(self)

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # an idle connection has nothing to say: it is broken
            self.transport.abort()
            return
        if ex.tunnel:
            ex.client.transport.write(data)
            return
        self.answered = True
        out = self.out = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            if self.state == _TUNNEL:
                tail = data[e.args[0] :]
                if tail:
                    out.append(tail)
                self._flush(ex, out)
                ex.begin_tunnel()
                return
            self._flush(ex, out)
            ex.fail(502, f"{ex.endpoint.name} sent an unexpected upgrade")  # type: ignore[union-attr]
            return
        except httptools.HttpParserError as e:
            self._flush(ex, out)
            cause = e.__context__ if isinstance(e.__context__, _BadResponse) else e
            ex.fail(502, f"{ex.endpoint.name} sent an invalid HTTP response: {cause}")  # type: ignore[union-attr]
            return
        if out:
            self._flush(ex, out)
        if self.state == _DONE:
            ex.response_done(self.keep and not self.dirty)

    @staticmethod
    def _flush(ex: _Exchange, out: list[bytes]) -> None:
        if not out:
            return
        if len(out) == 1:
            ex.client.transport.write(out[0])
        else:
            ex.client.transport.writelines(out)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.gw._live.discard(self)
        ex = self.ex
        if ex is None:
            self.gw._pool_discard(self)
            return
        name = ex.endpoint.name  # type: ignore[union-attr]
        if self.state == _TUNNEL:
            ex.abort()
        elif self.state == _BODY and self.eof_framed:
            if self.chunked_out:
                ex.client.transport.write(_LAST_CHUNK)
            ex.response_done(False)
        elif not ex.head_sent:
            if self.reused and not self.answered and ex.retryable:
                ex.retry()
            else:
                ex.fail(502, f"{name} closed the connection before sending a response")
        else:
            ex.fail(502, f"{name} closed the connection in the middle of its response")

    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.client._pause(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.client._resume(_UPSTREAM_FULL)

    # --- httptools callbacks ---------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.state != _HEAD:
            self.dirty = True
            return
        ex = self.ex
        assert ex is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                if not ex.websocket:
                    raise _BadResponse("101 Switching Protocols to a request that asked for no upgrade")
                self.state = _TUNNEL
                ex.head_sent = True
                self.out.append(self._head(status, upgrade=True))
            else:
                self.interim = True
                # 100 Continue is the gateway's to send (it asked for none upstream).
                if status != 100 and not ex.http10:
                    self.out.append(self._head(status))
            return
        self.out.append(self._head(status))
        ex.head_sent = True
        self.state = _DONE if self.head_request else _BODY

    def _head(self, status: int, upgrade: bool = False) -> bytes:
        """The response head for the client: hop-by-hop headers gone, framing as the client needs it."""
        ex = self.ex
        assert ex is not None
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, self.reason)]
        content_length = None
        te = None
        connection: list[bytes] = []
        upgrade_value = None
        for name, value in self.headers:
            lname = name.lower()
            if lname in _RESPONSE_SPECIAL:
                if lname == b"content-length":
                    content_length = name + b": " + value + _CRLF
                elif lname == b"transfer-encoding":
                    te = value
                elif lname == b"connection":
                    connection.append(value)
                elif lname == b"upgrade":
                    upgrade_value = value
                continue
            parts.append(name + b": " + value + _CRLF)
        named = _connection_named(connection) if connection else None
        if named:
            parts[1:] = _without(parts[1:], named)
        self.headers = []
        self.reason = b""
        if status < 200:
            if upgrade:
                parts.append(b"connection: upgrade\r\n")
                if upgrade_value is not None:
                    parts.append(b"upgrade: " + upgrade_value + _CRLF)
            parts.append(_CRLF)
            return b"".join(parts)
        if self.head_request or status == 204 or status == 304:
            # No body follows, whatever the headers say; a HEAD's Content-Length describes the GET.
            if content_length is not None and status != 204:
                parts.append(content_length)
            if self.head_request:
                closes = any(b"close" in v.lower() for v in connection)
                self.keep = not closes and self.parser.get_http_version() == "1.1"
        elif te is None and content_length is not None:
            parts.append(content_length)
        elif ex.http10:
            # Length unknown and the client cannot take chunks: the body ends when the connection does.
            self.eof_framed = te is None
            ex.close_after = True
        else:
            self.eof_framed = te is None
            self.chunked_out = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if ex.close_after or not ex.keep_alive:
            parts.append(b"connection: close\r\n")
        elif ex.http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(_CRLF)
        return b"".join(parts)

    def on_body(self, body: bytes) -> None:
        if self.state != _BODY:
            self.dirty = True
            return
        if self.chunked_out:
            self.out += (b"%x\r\n" % len(body), body, _CRLF)
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
            self.reason = b""
            return
        if self.state != _BODY:
            if self.state == _DONE:
                self.dirty = True
            return
        if self.chunked_out:
            self.out.append(_LAST_CHUNK)
        self.state = _DONE
        self.keep = self.parser.should_keep_alive()


class _BadResponse(Exception):
    pass


class Gateway:
    """Listens on one TCP port per web endpoint and proxies each request to a container's Unix socket."""

    idle_timeout = CLIENT_IDLE_SECONDS

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._listeners: dict[int, _Listener] = {}
        self._routes: dict[int, _Route] = {}
        self._pool: dict[str, list[_Upstream]] = {}
        self._live: set[asyncio.Protocol] = set()  # every connection whose transport is not yet closed
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task | None = None
        self._shortest_timeout = float("inf")

    async def open(self, port: int = 0) -> int:
        """Start listening on host:port (0: the OS picks); returns the port. An open port is kept."""
        async with self._lock:
            if port and port in self._listeners:
                return port
            self._loop = asyncio.get_running_loop()
            listener = _Listener()
            server = await self._loop.create_server(
                lambda: _Client(self, listener), self.host, port, backlog=1024
            )
            listener.server = server
            listener.port = server.sockets[0].getsockname()[1]
            self._listeners[listener.port] = listener
            if self._sweeper is None:
                self._sweeper = self._loop.create_task(self._sweep())
            return listener.port

    def route(self, port: int, endpoint: Endpoint | None, gone: str = "") -> None:
        """What `port` serves from now on (None: 404 with `gone`); exchanges in flight keep theirs."""
        self._routes[port] = _Route(endpoint, gone)
        self._retime()

    def _retime(self) -> None:
        self._shortest_timeout = min(
            (r.endpoint.timeout for r in self._routes.values() if r.endpoint and r.endpoint.timeout > 0),
            default=float("inf"),
        )

    async def close_port(self, port: int) -> None:
        """Stop listening on `port`, cut its connections and wait for its exchanges to end."""
        if self._routes.pop(port, None) is not None:
            self._retime()
        listener = self._listeners.pop(port, None)
        if listener is None:
            return
        assert listener.server is not None
        listener.closed = True
        listener.server.close()
        for client in list(listener.clients):
            client.shutdown()
        if listener.tasks:
            await asyncio.gather(*listener.tasks, return_exceptions=True)
        await listener.server.wait_closed()

    async def close(self) -> None:
        """Stop listening, abort every connection, and wait until no task or socket is left."""
        for port in list(self._listeners):
            await self.close_port(port)
        for idle in self._pool.values():
            for conn in idle:
                conn.transport.abort()
        self._pool.clear()
        for conn in list(self._live):
            if conn.transport is not None:  # type: ignore[attr-defined]
                conn.transport.abort()  # type: ignore[attr-defined]
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        # Aborted transports report connection_lost from the loop; let them, so that no socket is left.
        for _ in range(100):
            if not self._live:
                break
            await asyncio.sleep(0)

    # --- the upstream pool -----------------------------------------------------------------------
    def _pool_take(self, path: str) -> _Upstream | None:
        idle = self._pool.get(path)
        while idle:
            conn = idle.pop()
            if not idle:
                del self._pool[path]  # socket paths come and go with containers: keep no empty lists
            if not conn.lost:
                return conn
        return None

    def _pool_put(self, conn: _Upstream) -> None:
        idle = self._pool.get(conn.path)
        if idle is None:
            idle = self._pool[conn.path] = []
        if len(idle) >= POOL_MAX_IDLE:
            conn.transport.close()
            return
        conn.resume_reading()  # an idle connection is read, to notice when the container closes it
        idle.append(conn)

    def _pool_discard(self, conn: _Upstream) -> None:
        idle = self._pool.get(conn.path)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._pool[conn.path]

    async def _sweep(self) -> None:
        """End exchanges past their deadline, close client connections idle past `idle_timeout`.

        One sweep for all rather than a timer per request: on uvloop, call_later plus cancel costs about
        2 µs, a noticeable share of what the gateway itself spends on a request. Deadlines are met to
        within a tick, a tenth of the shortest timeout served (at most a second)."""
        while True:
            await asyncio.sleep(max(0.01, min(1.0, self.idle_timeout / 4, self._shortest_timeout / 10)))
            now = self._loop.time()
            idle_since = now - self.idle_timeout
            for listener in list(self._listeners.values()):
                for client in list(listener.clients):
                    ex = client.active
                    if ex is not None:
                        if ex.deadline and now >= ex.deadline:
                            ex.timed_out()
                    elif client.lingering:
                        if now >= client.lingering:
                            client.lingering = 0.0
                            client.transport.close()
                    elif client.closed:
                        continue  # closing already
                    elif not client.queue and client.seen < idle_since:
                        client._close(drain=False)
