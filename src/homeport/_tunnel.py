"""`modal.forward(port)` and `modal.Tunnel`.

The checks Modal makes are built (outside a container, and a port forwarded twice, raise `InvalidError`);
the tunnel itself (a gateway port on the user's machine relaying to the container's port) is not built
yet, and raises `UnimplementedError` naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from .exception import InvalidError, UnimplementedError

_forwarded: set[int] = set()


@dataclass(frozen=True)
class Tunnel:
    """A forwarded port: `url` reaches it from the user's machine (a loopback URL through the gateway)."""

    host: str
    port: int
    unencrypted_host: str = ""
    unencrypted_port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port not in (80, 443) else f"https://{self.host}"

    @property
    def tls_socket(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def tcp_socket(self) -> tuple[str, int]:
        if not self.unencrypted_port:
            raise InvalidError("This tunnel has no unencrypted socket: use `modal.forward(port, unencrypted=True)`.")
        return (self.unencrypted_host, self.unencrypted_port)


@contextlib.contextmanager
def forward(port: int, *, unencrypted: bool = False, h2_enabled: bool = False) -> Iterator[Tunnel]:
    """Expose `port` of this container while the `with` block lasts (only inside a container)."""
    from ._function import in_container

    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidError(f"Invalid port number {port!r}.")
    if not in_container():
        raise InvalidError("Forwarding ports only works inside a Modal container")
    if port in _forwarded:
        raise InvalidError(f"Port {port} is already forwarded")
    _forwarded.add(port)
    try:
        raise UnimplementedError(
            "`modal.forward` is not built in Homeport yet: the tunnel from the gateway to a container's port "
            "does not exist. Serve the port with `@app.server(port=...)` or `@modal.web_server(port)` instead."
        )
        yield  # pragma: no cover
    finally:
        _forwarded.discard(port)
