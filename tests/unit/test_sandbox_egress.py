"""The sandbox egress proxy's policy: what a sandbox in a network of its own may reach."""

from __future__ import annotations

import ipaddress

import pytest

from homeport.server.egress import Policy, parse_cidrs
from homeport.testing import machine_address


def test_the_machine_and_its_link_are_never_reachable():
    policy = Policy()
    for addr in ("127.0.0.1", "::1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1"):
        assert policy.address_refusal(ipaddress.ip_address(addr)) is not None, addr
    assert policy.address_refusal(ipaddress.ip_address("93.184.216.34")) is None


def test_cidr_allowlist():
    policy = Policy(cidrs=parse_cidrs(["10.0.0.0/8", "2001:db8::/32"], "outbound_cidr_allowlist"))
    assert policy.address_refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert policy.address_refusal(ipaddress.ip_address("2001:db8::1")) is None
    assert "outbound_cidr_allowlist" in policy.address_refusal(ipaddress.ip_address("192.0.2.1"))
    assert policy.address_refusal(ipaddress.ip_address("127.0.0.1")) is not None  # not even if listed
    with pytest.raises(ValueError, match="CIDR"):
        parse_cidrs(["not-a-network"], "outbound_cidr_allowlist")


def test_domain_allowlist():
    policy = Policy(domains=["pypi.org", "*.example.com"])
    assert policy.domain_allowed("pypi.org") and policy.domain_allowed("PyPI.org.")
    assert policy.domain_allowed("files.example.com") and policy.domain_allowed("example.com")
    assert not policy.domain_allowed("evilpypi.org") and not policy.domain_allowed("example.com.evil.net")
    assert not policy.domain_allowed("notexample.com")
    assert Policy().domain_allowed("anything.at.all")



def test_the_proxy_takes_only_its_token_and_a_bounded_number_of_connections(tmp_path, monkeypatch):
    import asyncio

    from homeport.server import egress

    host = machine_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    monkeypatch.setattr(egress, "MAX_CONNECTIONS", 2)

    async def scenario() -> dict:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + head.split(b"\r\n")[0])
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upstream, host, 0)
        port = server.sockets[0].getsockname()[1]
        proxy = egress.EgressProxy(str(tmp_path / "egress"), egress.Policy(), "tok")
        await proxy.start()

        async def ask(token: str, request: str) -> bytes:
            reader, writer = await asyncio.open_unix_connection(proxy.path)
            try:
                writer.write(f"{token}\n{request}".encode())
                return await reader.read()
            except ConnectionResetError:  # closed with what it sent unread
                return b""
            finally:
                writer.close()

        out = {"ok": await ask("tok", f"GET http://{host}:{port}/x?y HTTP/1.0\r\nProxy-Authorization: z\r\n\r\n"),
               "wrong": await ask("nope", f"GET http://{host}:{port}/ HTTP/1.0\r\n\r\n")}
        idle = [await asyncio.open_unix_connection(proxy.path) for _ in range(2)]  # say nothing, hold on
        await asyncio.sleep(0.1)
        out["over"] = await ask("tok", f"GET http://{host}:{port}/ HTTP/1.0\r\n\r\n")
        for _r, w in idle:
            w.close()
        await asyncio.sleep(0.2)  # the proxy's side of each sees the end and closes
        proxy.close()
        server.close()
        await server.wait_closed()
        return out

    out = asyncio.run(scenario())
    assert out["ok"] == b"HTTP/1.0 200 OK\r\n\r\nGET /x?y HTTP/1.0"  # origin-form upstream
    assert out["wrong"] == b"" and out["over"] == b""
