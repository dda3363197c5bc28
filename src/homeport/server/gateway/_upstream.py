"""The container side of the gateway: one `asyncio.Protocol` per Unix-socket connection (pooled)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

from ._http import (
    _BODY,
    _CRLF,
    _DONE,
    _HEAD,
    _LAST_CHUNK,
    _RESPONSE_SPECIAL,
    _TUNNEL,
    _UPSTREAM_FULL,
    Endpoint,
    _BadResponse,
    _connection_named,
    _without,
)


# What this side asks of the others, as Protocols, so that this module imports neither the exchange nor
# the gateway (they import it): the gateway's connection bookkeeping, and the exchange it carries.
class _UpstreamHub(Protocol):
    """What an upstream connection uses of its gateway."""

    _live: set[asyncio.Protocol]

    def _pool_discard(self, conn: _Upstream) -> None: ...


class _ClientEnd(Protocol):
    """What an upstream connection uses of the client connection its exchange came on."""

    transport: asyncio.Transport

    def _pause(self, reason: int) -> None: ...

    def _resume(self, reasons: int) -> None: ...


class _Carried(Protocol):
    """The exchange an upstream connection carries (`_exchange._Exchange`)."""

    endpoint: Endpoint | None
    method: bytes | None
    http10: bool
    keep_alive: bool
    websocket: bool
    tunnel: bool
    head_sent: bool
    close_after: bool

    @property
    def client(self) -> _ClientEnd: ...

    @property
    def retryable(self) -> bool: ...

    def begin_tunnel(self) -> None: ...

    def told_status(self, status: int) -> None: ...

    def response_done(self, reusable: bool) -> None: ...

    def retry(self) -> None: ...

    def fail(self, status: int, message: str) -> None: ...

    def abort(self) -> None: ...


class _Upstream(asyncio.Protocol):
    """A connection to a container's HTTP server; carries one exchange at a time, pooled in between."""

    def __init__(self, gateway: _UpstreamHub, path: str) -> None:
        self.gw = gateway
        self.path = path
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.ex: _Carried | None = None
        self.lost = False
        self.reading_paused = False
        self.out: list[bytes] = []
        self.reused = False
        self.begin(None, False)

    def begin(self, ex: _Carried | None, reused: bool) -> None:
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
    def connection_made(self, transport) -> None:
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
    def _flush(ex: _Carried, out: list[bytes]) -> None:
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
                ex.told_status(status)
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
        ex.told_status(status)
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
