"""`modal.Tunnel` and `modal.forward(port)`: reach a port of a container from the user's machine.

A tunnel is a TCP port on 127.0.0.1 of the machine the control plane runs on (or the host of
`HOMEPORT_WEB_HOST`), forwarded to the container's port: reachable from this machine only, and without
TLS (`url` is `http://...`; `tls_socket` raises `UnimplementedError`). A Sandbox's `tunnels()` forward
its declared ports; inside a function container, `forward` starts a relay (a Unix socket that pipes
each connection to `127.0.0.1:port` in the container) and asks the control plane for a gateway port in
front of it, which carries HTTP (and WebSocket upgrades).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import _protocol as P
from .exception import InvalidError, UnimplementedError

_forwarded: set[int] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Tunnel:
    host: str
    port: int
    unencrypted_host: str | None = None
    unencrypted_port: int | None = None

    @property
    def url(self) -> str:
        """The URL of the forwarded port (plain HTTP on this machine's loopback)."""
        return f"http://{self.host}:{self.port}"

    @property
    def tls_socket(self) -> tuple[str, int]:
        raise UnimplementedError("Tunnel.tls_socket: Homeport's tunnels are plain TCP on this machine's loopback; "
                                 "use `tunnel.tcp_socket` or `tunnel.url`")

    @property
    def tcp_socket(self) -> tuple[str, int]:
        if self.unencrypted_host is None or self.unencrypted_port is None:
            raise InvalidError("This tunnel is not configured for unencrypted TCP. Please use `unencrypted_ports=[...]`.")
        return self.unencrypted_host, self.unencrypted_port


class _Relay:
    """Accepts on a Unix socket the control plane can reach and pipes each connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        token = secrets.token_hex(16)
        prefix = os.environ.get(P.ENV_WEB_SOCKET)
        # A web container shares a directory of sockets with the control plane (and may have a network of
        # its own, where abstract names are not shared); others share the host's network namespace.
        self.path = f"{prefix}-fwd-{token}" if prefix else f"{P.TUNNEL_ABSTRACT_PREFIX}{token}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.closed = False
        self.conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"modal.forward:{port}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        self.conns.update((conn, upstream))
        t = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
        t.start()
        _pipe(conn, upstream)
        t.join()
        for s in (conn, upstream):
            self.conns.discard(s)
            s.close()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for s in list(self.conns):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if not self.path.startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


async def _request(msg: P.Tunnel) -> dict:
    from ._client import get_client

    return await (await get_client()).request(msg)


@contextlib.contextmanager
def forward(port: int, *, unencrypted: bool = False, h2_enabled: bool = False) -> Iterator[Tunnel]:
    """Expose `port` of this container while the `with` block lasts (only inside a container).

    ```python
    with modal.forward(8000) as tunnel:
        print(tunnel.url)
    ```
    """
    from ._bridge import run_sync
    from ._function import in_container

    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidError(f"Invalid port number {port!r}.")
    if not in_container():
        raise InvalidError("Forwarding ports only works inside a Modal container")
    if unencrypted:
        raise UnimplementedError("`modal.forward(unencrypted=True)`: raw TCP tunnels are not built in Homeport yet.")
    if h2_enabled:
        raise UnimplementedError("`modal.forward(h2_enabled=True)`: HTTP/2 tunnels are not built in Homeport yet.")
    with _lock:
        if port in _forwarded:
            raise InvalidError(f"Port {port} is already forwarded")
        _forwarded.add(port)
    relay = None
    gateway_port = None
    try:
        relay = _Relay(port)
        reply = run_sync(_request(P.Tunnel(op="open", path=relay.path, port=port)))
        gateway_port = reply["port"]
        host = urlsplit(reply["url"]).hostname or "127.0.0.1"
        yield Tunnel(host, gateway_port)
    finally:
        if gateway_port is not None:
            with contextlib.suppress(Exception):
                run_sync(_request(P.Tunnel(op="close", port=gateway_port)))
        if relay is not None:
            relay.close()
        with _lock:
            _forwarded.discard(port)
