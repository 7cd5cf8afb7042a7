"""Which upstream addresses are off limits, in the config and when connecting.

`tests/server/test_security.py` replays the admin-API attack; here the rule
itself, and the resolver that applies it to names (a DNS answer is input too:
`169.254.169.254.nip.io` names the metadata service).
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from chain429.upstream.addresses import forbidden_upstream, is_loopback_name
from chain429.upstream.transport import GuardedResolver


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fd00:ec2::254",
        "[fe80::1]",
        "::ffff:169.254.169.254",
        "metadata.google.internal",
        "100.100.100.200",
    ],
)
def test_metadata_and_link_local_hosts_are_refused(host):
    assert forbidden_upstream(host) is not None
    assert forbidden_upstream(host, ["169.254.0.0/16", "fe80::/10", host.strip("[]")]) is None


@pytest.mark.parametrize("host", ["api.groq.com", "127.0.0.1", "localhost", "10.0.0.5", "::1"])
def test_ordinary_and_local_hosts_are_providers(host):
    assert forbidden_upstream(host) is None


@pytest.mark.parametrize(
    "host,loopback",
    [("localhost", True), ("LOCALHOST.", True), ("ui.localhost", True), ("127.0.0.2", True),
     ("::1", True), ("localhost.evil.example", False), ("attacker.example", False)],
)  # fmt: skip
def test_loopback_names(host, loopback):
    assert is_loopback_name(host) is loopback


class FakeDns(AbstractResolver):
    """The system resolver's part: names to addresses, as a DNS server answered."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


def resolve(host: str, allowed: list[str] | None = None) -> list[str]:
    dns = FakeDns(
        {
            "169.254.169.254.nip.io": ["169.254.169.254"],
            "mixed.example": ["169.254.1.1", "93.184.216.34"],
            "api.example": ["93.184.216.34"],
            "meta.internal": ["fd00:ec2::254"],
        }
    )
    resolver = GuardedResolver(lambda: allowed or (), dns)
    return [info["host"] for info in asyncio.run(resolver.resolve(host, 443))]


def test_a_name_that_resolves_to_the_metadata_service_is_refused_when_connecting():
    with pytest.raises(OSError, match=re.escape("169.254.169.254.nip.io resolves to 169.254.")):
        resolve("169.254.169.254.nip.io")
    with pytest.raises(OSError, match="allowPrivateUpstreams"):
        resolve("meta.internal")


def test_only_the_forbidden_answers_are_dropped():
    assert resolve("mixed.example") == ["93.184.216.34"]
    assert resolve("api.example") == ["93.184.216.34"]


def test_allow_private_upstreams_lets_a_listed_name_or_network_through():
    assert resolve("169.254.169.254.nip.io", ["169.254.169.254.nip.io"]) == ["169.254.169.254"]
    assert resolve("mixed.example", ["169.254.0.0/16"]) == ["169.254.1.1", "93.184.216.34"]
