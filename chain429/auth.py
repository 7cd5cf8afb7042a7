"""Who is asking: proxy keys, admin keys, or nobody (loopback-only open mode).

Keys are compared in constant time against every configured key, so timing
reveals neither which key matched nor how many keys there are. A caller is
identified in logs and the request log by a label (`key#2`, `admin#1`),
never by the key.
"""

from __future__ import annotations

import hmac

from sanic import Request

from chain429.errors import ApiError
from chain429.runtime import Snapshot

OPEN = "open"  # the label when no keys are configured


def presented_key(request: Request) -> bytes | None:
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    key = request.headers.get("x-api-key")
    return key.strip().encode() if key else None


def _match(presented: bytes, keys: tuple[bytes, ...]) -> int | None:
    """1-based index of the matching key; every key is compared whatever the result."""
    found = None
    for index, key in enumerate(keys, 1):
        if hmac.compare_digest(presented, key) and found is None:
            found = index
    return found


def authorize(request: Request, snapshot: Snapshot, *, admin: bool) -> str:
    """The caller's label; raises 401 (no or unknown key) or 403 (proxy key on an admin route)."""
    proxy_keys, admin_keys = snapshot.proxy_keys, snapshot.admin_keys
    # Who holds admin: the admin keys; with none configured, the proxy keys (as in 429chain).
    admin_holders = admin_keys or proxy_keys
    required = admin_holders if admin else proxy_keys
    if not required:
        return OPEN  # no keys configured: open, which `serve` allows on loopback only
    presented = presented_key(request)
    if presented is None:
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.",
            code="invalid_api_key",
        )
    as_admin = _match(presented, admin_keys)
    as_proxy = _match(presented, proxy_keys)
    if as_admin is not None:
        return f"admin#{as_admin}"
    if as_proxy is not None:
        if admin and admin_keys:
            raise ApiError(
                403, "This key may not use admin routes.", code="insufficient_permissions"
            )
        return f"key#{as_proxy}"
    raise ApiError(401, "Invalid API key.", code="invalid_api_key")
