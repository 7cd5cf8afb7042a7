"""Which hosts are loopback, and which upstream addresses are off limits.

Two rules about addresses live here so the config loader, the server and the
upstream client agree on them:

- *Loopback names* (`localhost`, `127.0.0.0/8`, `::1`): a server bound to one
  of them may run without keys, and in that mode it answers only requests
  whose `Host` is one of them (a DNS-rebinding page names its own host).
- *Link-local and cloud-metadata addresses* (169.254.0.0/16, fe80::/10 and
  the metadata endpoints such as 169.254.169.254 and fd00:ec2::254) are never
  a provider: a `baseUrl` pointing there would hand a provider key, or the
  machine's cloud credentials, to whoever can edit the config. They are
  refused unless `settings.allowPrivateUpstreams` lists them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "METADATA_HOSTS",
    "forbidden_upstream",
    "host_of",
    "is_listed",
    "is_loopback",
    "is_loopback_name",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names the cloud metadata services answer to, besides their addresses.
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# Addresses outside the link-local ranges that serve cloud metadata.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "fd20:ce::254")
)


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return address


def is_loopback(host: str) -> bool:
    """A loopback address or `localhost` (what a server may bind to without keys)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    address = _address(host)
    return address is not None and address.is_loopback


def is_loopback_name(host: str) -> bool:
    """A `Host` header's name (no port) that only this machine can mean.

    `*.localhost` counts: browsers resolve it to loopback themselves and never
    ask DNS, so a rebinding attack cannot use it.
    """
    name = host.lower().rstrip(".")
    return is_loopback(name) or name.endswith(".localhost")


def host_of(url: str) -> str:
    """The host of a URL, lower-case and without brackets or port ('' if none)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def is_listed(host: str, allowed: Iterable[str]) -> bool:
    """Whether `settings.allowPrivateUpstreams` names this host, or an address or network
    it falls in."""
    host = host.lower().strip("[]").rstrip(".")
    return _listed(host, _address(host), allowed)


def _listed(host: str, address: IPAddress | None, allowed: Iterable[str]) -> bool:
    for item in allowed:
        item = item.strip().lower()
        if address is not None:
            try:
                if address in ipaddress.ip_network(item.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
        if item.rstrip(".") == host:
            return True
    return False


def forbidden_upstream(host: str, allowed: Iterable[str] = ()) -> str | None:
    """Why `host` may not receive provider calls, or None if it may.

    `host` is a name or an address (as in a URL, or as a resolver returned it);
    `allowed` is `settings.allowPrivateUpstreams` (addresses, networks, names).
    """
    host = host.lower().strip("[]").rstrip(".")
    address = _address(host)
    if address is None:
        reason = "is a cloud metadata service" if host in METADATA_HOSTS else None
    elif address in _METADATA_ADDRESSES or address.is_link_local:
        reason = "is a link-local / cloud metadata address"
    else:
        reason = None
    if reason is None or _listed(host, address, allowed):
        return None
    return reason
