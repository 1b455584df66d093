"""Which addresses `http.request` may reach, and the guard at connect time."""

from __future__ import annotations

import ipaddress

import pytest

from taskcast.worker.kinds._guard import (
    AddressPolicy,
    BlockedAddressError,
    GuardedBackend,
    non_public,
)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "private"),
    ],
)
def test_non_public_addresses(address: str, why: str | None) -> None:
    assert non_public(ipaddress.ip_address(address)) == why


def test_policy_allows_listed_hosts_and_networks() -> None:
    policy = AddressPolicy.parse("localhost, 10.0.0.0/8 192.168.1.7  Intranet.Example.")
    loop, ten = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.9.9")
    assert policy.refusal("LOCALHOST", loop) is None
    assert policy.refusal("intranet.example", ipaddress.ip_address("172.16.0.1")) is None
    assert policy.refusal("anything", ten) is None
    assert policy.refusal("anything", ipaddress.ip_address("::ffff:10.1.1.1")) is None
    assert policy.refusal("anything", ipaddress.ip_address("192.168.1.7")) is None
    assert policy.refusal("anything", ipaddress.ip_address("192.168.1.8")) == "private"
    assert policy.refusal("other", loop) == "loopback"
    assert AddressPolicy.parse("").refusal("example.com", ten) == "private"


async def test_backend_refuses_before_connecting() -> None:
    backend = GuardedBackend(AddressPolicy())
    with pytest.raises(BlockedAddressError, match=r"refused to connect to 127\.0\.0\.1: loopback"):
        await backend.connect_tcp("127.0.0.1", 9, timeout=5)
    with pytest.raises(BlockedAddressError, match="unix sockets"):
        await backend.connect_unix_socket("/tmp/x.sock")


async def test_backend_checks_addresses_given_as_such_and_resolves_the_rest() -> None:
    # An address is checked as written; "127.1" is a name to getaddrinfo, which resolves it.
    backend = GuardedBackend(AddressPolicy())
    with pytest.raises(BlockedAddressError, match=r"refused to connect to ::1: loopback"):
        await backend.connect_tcp("::1", 9, timeout=5)
    with pytest.raises(BlockedAddressError, match=r"to 127\.1 \(127\.0\.0\.1\): loopback"):
        await backend.connect_tcp("127.1", 9, timeout=5)
