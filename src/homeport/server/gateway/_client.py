"""The client side of the gateway: one `asyncio.Protocol` per accepted TCP connection."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import httptools

from ._exchange import _Exchange, _ExchangeHub
from ._http import (
    _CRLF,
    _HOLD,
    _LAST_CHUNK,
    _PIPELINE,
    _UPSTREAM_FULL,
    HOLD_LIMIT,
    LINGER_SECONDS,
    MAX_HEAD,
    _HeadTooLarge,
    _plain,
)


class _ClientHub(_ExchangeHub, Protocol):
    """What a client connection (and its exchanges) use of the gateway (`_gateway.Gateway`), as a
    Protocol so that this module does not import the gateway, which imports it."""

    head_timeout: float


class _Listener:
    """One listening port's client connections, and the tasks of its exchanges still unwinding."""

    __slots__ = ("clients", "closed", "port", "server", "tasks")

    def __init__(self) -> None:
        self.closed = False
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.clients: set[_Client] = set()
        self.tasks: set[asyncio.Task] = set()


class _Client(asyncio.Protocol):
    """One client connection: parses its requests and runs their exchanges one at a time, in order."""

    def __init__(self, gateway: _ClientHub, listener: _Listener) -> None:
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
        self.head_since = 0.0  # loop time of the first byte of a request head still being read (0: none)
        self.lingering = 0.0  # loop time until which a closing connection is drained

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
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
        self.head_since = self.seen

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
        self.head_since = 0.0
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

    def head_timed_out(self) -> None:
        """The request head did not arrive within `head_timeout` of its first byte (a slowloris)."""
        self.head_since = 0.0
        self.transport.write(_plain(408, f"request head not received within {self.gw.head_timeout:g} s", close=True))
        self._close(drain=False)

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
