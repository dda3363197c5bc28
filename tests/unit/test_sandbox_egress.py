"""The sandbox egress proxy's policy: what a sandbox in a network of its own may reach."""

from __future__ import annotations

import ipaddress

import pytest

from homeport.server.egress import Policy, parse_cidrs


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
