"""Where a process reaches the control plane: a Unix socket path (the local default, and the only way in
for admin clients) or `tcp://HOST:PORT` (containers on other machines, e.g. on a Ray cluster, with their
per-container credentials). Shared by the SDK, the container runtime and the control plane; imports
nothing of ours.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

TCP_SCHEME = "tcp://"


def is_tcp(address: str) -> bool:
    return address.startswith(TCP_SCHEME)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `HOST` (with `default_port`) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):  # "HOST", or a bare IPv6 address
        if default_port is None:
            raise ValueError(f"{text!r} is not HOST:PORT")
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{text!r} names no host")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: the port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{text!r}: the port {number} is out of range")
    return host, number


def tcp(host: str, port: int) -> str:
    """The address `tcp://host:port` (an IPv6 host in brackets)."""
    return f"{TCP_SCHEME}[{host}]:{port}" if ":" in host else f"{TCP_SCHEME}{host}:{port}"


def tcp_target(address: str) -> tuple[str, int]:
    return split_host_port(address[len(TCP_SCHEME):])


def connect(address: str, timeout: float | None = None) -> socket.socket:
    """A blocking socket connected to `address` (OSError when nothing listens there)."""
    if is_tcp(address):
        sock = socket.create_connection(tcp_target(address), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames, answered at once
        sock.settimeout(None)
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if timeout is not None:
            sock.settimeout(timeout)
        sock.connect(address)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection(factory: Callable[[], asyncio.Protocol], address: str) -> tuple:
    """`loop.create_connection` or `create_unix_connection`, by the address (asyncio sets TCP_NODELAY)."""
    loop = asyncio.get_running_loop()
    if is_tcp(address):
        host, port = tcp_target(address)
        return await loop.create_connection(factory, host, port)
    return await loop.create_unix_connection(factory, address)
