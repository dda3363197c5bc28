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

Modules: `_http` (constants, the gateway's own responses, header rules), `_exchange` (one request and
its response), `_client` and `_upstream` (the protocols of the two sides), `_gateway` (listeners,
routes, the upstream pool and the sweeper).
"""

from ._gateway import Gateway
from ._http import AUTH_MESSAGE, NO_ENDPOINT, Endpoint, HTTPError, Upstream

__all__ = ["AUTH_MESSAGE", "NO_ENDPOINT", "Endpoint", "Gateway", "HTTPError", "Upstream"]
