"""Outbound access of a sandbox that has a network of its own: an HTTP proxy, with its allowlists.

A sandbox runs in a network namespace with only loopback (so that two sandboxes can listen on one
port, and none reaches the machine's own services). What it may reach outside goes through this proxy:
the agent listens on `127.0.0.1:EGRESS_PORT` inside and relays each connection to a Unix socket of the
control plane (each connection first says the sandbox's egress token: the socket's directory is in
view of other containers, whose tokens, and so allowlists, are their own), and the sandbox's
environment names it (`HTTP_PROXY`, `HTTPS_PROXY`, lower case too),
which pip, uv, curl, requests, urllib and most HTTP clients follow. So a sandbox has:

- HTTP and HTTPS to any host (`CONNECT host:port` for TLS and anything a client tunnels; plain
  `GET http://...` forwarded), names resolved by the control plane;
- not the machine itself or its neighbours' metadata: loopback, link-local (169.254.0.0/16, the
  clouds' metadata service), unspecified and multicast addresses are refused;
- with `outbound_domain_allowlist` / `outbound_cidr_allowlist`, only those domains (a `*.` prefix
  allows subdomains) / networks, checked on the address actually connected to;
- no other outbound traffic: no route but loopback, so no UDP, no DNS of its own, no raw TCP to a
  program that ignores the proxy variables;
- at most `MAX_CONNECTIONS` through it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._wire import relay

log = logging.getLogger("homeport.server.egress")

EGRESS_PORT = 41080  # inside the sandbox's own network: the proxy's end there
MAX_HEAD = 64 << 10
MAX_CONNECTIONS = 256  # open at once per sandbox: its code cannot use up the control plane's descriptors
HEAD_TIMEOUT = 30.0  # to say its token and its request
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_environ() -> dict[str, str]:
    url = f"http://127.0.0.1:{EGRESS_PORT}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1"}


def parse_cidrs(values: Sequence[str], what: str) -> list[Network]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not a network in CIDR notation (10.0.0.0/8)") from None
    return out


@dataclass
class Policy:
    """What a sandbox may reach: None means anything outside the machine."""

    domains: list[str] | None = None
    cidrs: list[Network] | None = None
    denied: list[str] = field(default_factory=list)  # what it asked for and was refused (for its log)

    def domain_allowed(self, host: str) -> bool:
        if self.domains is None:
            return True
        host = host.lower().rstrip(".")
        for d in self.domains:
            d = d.lower().rstrip(".")
            if d.startswith("*.") and (host.endswith(d[1:]) or host == d[2:]):
                return True
            if host == d:
                return True
        return False

    def address_refusal(self, addr: Address) -> str | None:
        if addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
            return f"{addr} is this machine or its link (loopback, link-local, metadata), out of a sandbox's reach"
        if self.cidrs is not None and not any(addr in net for net in self.cidrs):
            return f"{addr} is not in the sandbox's outbound_cidr_allowlist"
        return None


class EgressProxy:
    """One sandbox's proxy, served on a Unix socket the agent relays to."""

    def __init__(self, path: str, policy: Policy, token: str) -> None:
        self.path = path
        self.policy = policy
        self.token = token.encode()
        self.server: asyncio.AbstractServer | None = None
        self.open = 0

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            writer.close()
            return
        self.open += 1
        try:
            await self._proxy(reader, writer)
        finally:
            self.open -= 1

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            said = (await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT)).rstrip(b"\n")
            if not hmac.compare_digest(said, self.token):
                writer.close()
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError,
                asyncio.TimeoutError):
            writer.close()
            return
        if len(head) > MAX_HEAD:
            await _answer(writer, 431, "request head too large")
            return
        line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = line.decode("latin-1").split(" ")
        except ValueError:
            await _answer(writer, 400, "malformed request line")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            forward = b""
        else:
            if not target.startswith("http://"):
                await _answer(writer, 400, "a proxy request names an absolute http:// URL (or CONNECT for TLS)")
                return
            hostport, _, path = target[len("http://"):].partition("/")
            host, _, port = hostport.rpartition(":") if ":" in hostport.rsplit("]", 1)[-1] else (hostport, "", "80")
            headers = b"".join(h + b"\r\n" for h in rest.split(b"\r\n")
                               if h and not h.lower().startswith((b"proxy-", b"connection:")))
            forward = f"{method} /{path} {version}\r\n".encode("latin-1") + headers + b"Connection: close\r\n\r\n"
        host = host.strip("[]")
        try:
            port_n = int(port)
        except ValueError:
            await _answer(writer, 400, f"no port in {target!r}")
            return
        try:
            addr = await self._resolve(host, port_n)
        except PermissionError as exc:
            self.policy.denied.append(str(exc))
            await _answer(writer, 403, str(exc))
            return
        except OSError as exc:
            await _answer(writer, 502, f"{host} cannot be resolved: {exc}")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(str(addr), port_n), 30)
        except (OSError, asyncio.TimeoutError) as exc:
            await _answer(writer, 502, f"{host}:{port_n} cannot be reached: {exc}")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(forward)

        async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return up_reader, up_writer

        await relay(reader, writer, opened)

    async def _resolve(self, host: str, port: int) -> Address:
        """The address to connect to: resolved once here and checked, so that what is connected to is
        what was allowed (a name that resolves again to another address changes nothing)."""
        if not self.policy.domain_allowed(host):
            raise PermissionError(f"{host} is not in the sandbox's outbound_domain_allowlist")
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
        why = None
        for addr in addrs:
            why = self.policy.address_refusal(addr)
            if why is None:
                return addr
        raise PermissionError(why or f"{host} has no address")


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}
    body = f"homeport sandbox proxy: {text}\n".encode()
    writer.write(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
