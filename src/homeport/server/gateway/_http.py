"""Constants, the gateway's public types, its own plain-text responses and the header rules."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

log = logging.getLogger("homeport.gateway")

MAX_HEAD = 64 * 1024  # request line and headers; more is answered 431
HOLD_LIMIT = 64 * 1024  # request bytes held while no upstream can take them yet
POOL_MAX_IDLE = 128  # idle upstream connections kept per socket path
CLIENT_IDLE_SECONDS = 75.0  # a client connection between requests is closed after this long
# A request head (line and headers) must arrive within this long of its first byte, however slowly
# its bytes trickle in (slowloris): past it the client is answered 408 and its connection closed.
HEAD_SECONDS = 10.0
LINGER_SECONDS = 5.0  # how long the rest of a request answered early is read (and dropped) before closing

AUTH_MESSAGE = "missing or invalid proxy auth credentials: send the Modal-Key and Modal-Secret headers"
NO_ENDPOINT = "no web endpoint is served on this port"

# Headers that describe one hop, not the message: never forwarded as received.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# The gateway is the edge, so what a client claims about forwarding is replaced, not trusted.
_REQUEST_DROP = _HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-proto"}
# The proxy-auth credentials, checked by `Endpoint.authorize` and never sent on.
_AUTH_HEADERS = frozenset({b"modal-key", b"modal-secret"})
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
    # A container slot; may wait (queued, or while a container starts). Cancelled if the client leaves:
    # it must then hold no slot. The gateway puts no deadline on the wait: the control plane fails it
    # (HTTPError) when no container can start, within the function's `startup_timeout`.
    acquire: Callable[[], Awaitable[Upstream]]
    timeout: float = 300.0  # seconds for the rest of the exchange once `acquire` gave it a slot
    # None: no auth. Else False answers 401; True forwards the request without the credentials, so that
    # the endpoint's code (or anyone it logs headers to) cannot replay them against other endpoints.
    authorize: Callable[[list[tuple[bytes, bytes]]], bool] | None = None
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()  # added to the request sent upstream
    on_status: Callable[[int], None] | None = None  # told each response's status (metrics)
    # When set: called instead of `acquire` for a request with a `Modal-Session-ID` header (its value),
    # to prefer the container that served the session before (best-effort affinity).
    acquire_session: Callable[[bytes], Awaitable[Upstream]] | None = None


class _Route:
    __slots__ = ("drop", "endpoint", "extra", "gone")

    def __init__(self, endpoint: Endpoint | None, gone: str) -> None:
        self.endpoint = endpoint
        self.gone = gone or NO_ENDPOINT
        extra = endpoint.extra_headers if endpoint is not None else ()
        # Clients must not be able to forge what the gateway adds.
        self.drop = _REQUEST_DROP | {name.lower() for name, _ in extra}
        if endpoint is not None and endpoint.authorize is not None:
            self.drop |= _AUTH_HEADERS
        self.extra = b"".join(name + b": " + value + _CRLF for name, value in extra)


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


class _BadResponse(Exception):
    pass
