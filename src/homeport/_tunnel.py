"""`modal.Tunnel`: where a port a container opens can be reached.

On the local backend a tunnel is a TCP port on 127.0.0.1 of the machine the control plane runs on,
forwarded to the container's port: reachable from this machine only, and without TLS (`url` is
`http://...`; `tls_socket` raises `UnimplementedError`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .exception import InvalidError, UnimplementedError

__all__ = ["Tunnel"]


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
