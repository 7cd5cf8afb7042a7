"""Who is asking: proxy keys, client keys, admin keys, or nobody (loopback-only open mode).

Three scopes: `PROXY` routes (completions, models, rate limits) take a proxy,
a client or an admin key; `READ` routes (admin views, stats, metrics) take an admin
key, or a proxy key when no admin keys are configured; `WRITE` routes (config
edits, reloads, chain tests) take an admin key only — a proxy key must never
be able to point a provider, and its key, somewhere else. A client key
(`clients:`) is a proxy key that names its caller: it takes `PROXY` routes
only, never an admin read (one team member does not read the others' usage;
an admin does). `apiKeys` stay what they were: an anonymous caller. With no
keys at all the server is open, which `serve` allows on loopback only, where
`chain429.server.guard` keeps web pages out.

Routes declare their scope with one decorator, `@requires(Scope.X)`: the
key is checked before the handler runs (before any body or parameter is
read, so an anonymous caller learns nothing, not even a 400), and the
caller's label is left in `request.ctx.caller`. The proxy route alone checks
inside its handler, so that a refused key is still a row in the request log.

Keys are compared in constant time against every configured key, so timing
reveals neither which key matched nor how many keys there are. Client keys,
of which a team may have many, are looked up by their SHA-256 digest in a
dict built at config load: one lookup whose timing depends on the digest,
which says nothing about how close a wrong key came. A caller is identified
in logs and the request log by a label (`key#2`, `admin#1`,
`client:alice`), never by the key.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Concatenate, ParamSpec, TypeVar

from chain429.config.model import Config
from chain429.routing.runtime import ClientRuntime, Snapshot, key_digest
from chain429.server.context import AppRequest
from chain429.server.errors import ApiError
from chain429.upstream.addresses import is_loopback

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[Concatenate[AppRequest, P], Awaitable[R]]

OPEN = "open"  # the label when no keys guard the route


class Scope(StrEnum):
    PROXY = "proxy"
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: its label, and the client it is when a client key was sent."""

    label: str
    client: ClientRuntime | None = None


def presented_key(request: AppRequest) -> bytes | None:
    auth: str | None = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    key: str | None = request.headers.get("x-api-key")
    return key.strip().encode() if key else None


def _match(presented: bytes, keys: tuple[bytes, ...]) -> int | None:
    """1-based index of the matching key; every key is compared whatever the result."""
    found = None
    for index, key in enumerate(keys, 1):
        if hmac.compare_digest(presented, key) and found is None:
            found = index
    return found


def is_guarded(snapshot: Snapshot, scope: Scope) -> bool:
    """Whether a route of this scope needs a key at all."""
    if scope is Scope.PROXY:
        return bool(snapshot.proxy_keys or snapshot.client_keys)
    return bool(snapshot.admin_keys or snapshot.proxy_keys or snapshot.client_keys)


def authorize(request: AppRequest, snapshot: Snapshot, scope: Scope) -> str:
    """The caller's label; raises 401 (no or unknown key) or 403 (a key of the wrong scope)."""
    return identify(request, snapshot, scope).label


def identify(request: AppRequest, snapshot: Snapshot, scope: Scope) -> Caller:
    """The caller; raises 401 (no or unknown key) or 403 (a key of the wrong scope)."""
    proxy_keys, admin_keys = snapshot.proxy_keys, snapshot.admin_keys
    if not is_guarded(snapshot, scope):
        return Caller(OPEN)
    presented = presented_key(request)
    if presented is None:
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.",
            code="invalid_api_key",
        )
    as_admin = _match(presented, admin_keys)
    as_proxy = _match(presented, proxy_keys)
    client = snapshot.client_keys.get(key_digest(presented)) if snapshot.client_keys else None
    if as_admin is not None:
        return Caller(f"admin#{as_admin}")
    if client is not None:
        if scope is not Scope.PROXY:
            raise ApiError(
                403,
                "A client key may call the proxy API only (chat completions, models); "
                "admin routes and stats take an admin key (settings.adminKeys).",
                code="insufficient_permissions",
            )
        return Caller(f"client:{client.name}", client)
    if as_proxy is None:
        raise ApiError(401, "Invalid API key.", code="invalid_api_key")
    if scope is Scope.WRITE:
        hint = "" if admin_keys else " Add settings.adminKeys and use one of those."
        raise ApiError(
            403,
            f"A proxy key may not change this server's configuration.{hint}",
            code="insufficient_permissions",
        )
    if scope is Scope.READ and admin_keys:
        raise ApiError(403, "This key may not use admin routes.", code="insufficient_permissions")
    return Caller(f"key#{as_proxy}")


def requires(scope: Scope) -> Callable[[Handler[P, R]], Handler[P, R]]:
    """The route decorator for `scope`: 401/403 before the handler runs."""

    def decorate(handler: Handler[P, R]) -> Handler[P, R]:
        @functools.wraps(handler)
        async def checked(request: AppRequest, /, *args: P.args, **kwargs: P.kwargs) -> R:
            caller = identify(request, request.app.ctx.snapshot, scope)
            request.ctx.caller, request.ctx.client = caller.label, caller.client
            return await handler(request, *args, **kwargs)

        return checked

    return decorate


def exposure_problem(config: Config, host: str) -> str | None:
    """Why serving `config` on `host` would open the proxy to the network, if it would.

    One rule for starting (`serve` refuses), for admin edits (422) and for hot
    reloads (the last good config stays): without proxy keys (`apiKeys`, or
    clients' keys), loopback only.
    """
    if config.settings.api_keys or config.clients or is_loopback(host):
        return None
    return (
        f"on {host} without settings.apiKeys or clients: anyone on the network could spend "
        "your provider quota; keep apiKeys or clients, or bind to 127.0.0.1"
    )
