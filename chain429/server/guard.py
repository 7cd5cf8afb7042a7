"""Browser safety: what keeps a web page the user visits away from this server.

Any page can make the browser send requests to http://127.0.0.1:3429. Keys
stop that where they are configured; without keys (loopback only) these
checks are all there is. One request middleware applies them to every route,
before any handler reads a body:

- `Host` must be a loopback name or in `settings.allowedHosts` (else 421),
  whenever no keys are configured (or `allowedHosts` is set): a DNS-rebinding
  page reaches 127.0.0.1 under its own host name, and this is where it shows.
- A state-changing request (anything but GET/HEAD/OPTIONS) whose `Origin` is
  not this server's own nor in `settings.corsOrigins` is refused (403): a
  cross-site form or `fetch` would otherwise spend quota or edit the config.
- A route that reads a JSON body accepts only `application/json` (415): the
  content types a page may send without a CORS preflight (`text/plain`, forms)
  are exactly the ones refused. YAML routes take YAML media types.
- CORS preflights are answered only for `settings.corsOrigins` (none by
  default), and only those origins get CORS headers on answers.
"""

from __future__ import annotations

from sanic.response import HTTPResponse, empty

from chain429.routing.runtime import Snapshot
from chain429.server.context import AppRequest
from chain429.server.errors import ApiError
from chain429.upstream.addresses import is_loopback_name

__all__ = ["JSON_BODY", "YAML_BODY", "add_cors_headers", "guard"]

# What a route's body may be, declared on the route as `ctx_body=...`.
JSON_BODY = ("application/json",)
YAML_BODY = (
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",  # YAML is a superset of JSON
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOW_HEADERS = "authorization, content-type, x-api-key, if-match, x-429chain-max-wait"
_EXPOSE_HEADERS = (
    "etag, retry-after, x-request-id, x-429chain-provider, x-429chain-attempts, "
    "x-429chain-trace, x-should-retry"
)
_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"


def _host_name(host: str) -> str:
    """`Host` without its port: `[::1]:3429` -> `::1`, `Example.COM.:80` -> `example.com`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def _origin_allowed(origin: str, snapshot: Snapshot) -> bool:
    return origin in snapshot.cors_origins or "*" in snapshot.cors_origins


def _same_origin(origin: str, host: str) -> bool:
    """The page's origin is this server as the client addressed it (scheme aside:
    a TLS-terminating proxy in front of us changes it)."""
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.lower() == host.strip().lower()


async def guard(request: AppRequest) -> HTTPResponse | None:
    """Sanic request middleware: refuse what a foreign web page could send."""
    snapshot = request.app.ctx.snapshot
    headers = request.headers
    host = headers.get("host", "")
    if snapshot.check_host:
        name = _host_name(host)
        if not (is_loopback_name(name) or name in snapshot.allowed_hosts):
            raise ApiError(
                421,
                f"This server does not answer to the host name {name!r}; "
                "add it to settings.allowedHosts if it should.",
                code="misdirected_request",
            )
    origin = headers.get("origin")
    method = request.method
    if method == "OPTIONS" and origin is not None:
        return _preflight(origin, request, snapshot)
    if method not in _SAFE_METHODS:
        if origin is not None and not (
            _same_origin(origin, host) or _origin_allowed(origin.lower(), snapshot)
        ):
            raise ApiError(
                403,
                f"Requests from the web page at {origin} are not allowed; "
                "list its origin in settings.corsOrigins if they should be.",
                code="origin_not_allowed",
            )
        route = request.route
        accepted = getattr(route.ctx, "body", None) if route is not None else None
        content_type = headers.get("content-type")
        if accepted is not None and (request.body or content_type is not None):
            _check_media_type(content_type, accepted)
    return None


def _check_media_type(content_type: str | None, accepted: tuple[str, ...]) -> None:
    media = (content_type or "").partition(";")[0].strip().lower()
    if media in accepted or (accepted is JSON_BODY and media.endswith("+json")):
        return
    raise ApiError(
        415,
        f"Send the body as {accepted[0]} (Content-Type: {accepted[0]}); "
        f"got {media or 'no Content-Type'}.",
        code="unsupported_media_type",
    )


def _preflight(origin: str, request: AppRequest, snapshot: Snapshot) -> HTTPResponse:
    if not _origin_allowed(origin.lower(), snapshot):
        raise ApiError(
            403,
            f"Cross-origin requests from {origin} are not allowed (settings.corsOrigins).",
            code="origin_not_allowed",
        )
    headers = {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": _ALLOW_METHODS,
        "access-control-allow-headers": _ALLOW_HEADERS,
        "access-control-max-age": "600",
        "vary": "Origin",
    }
    return empty(204, headers)


async def add_cors_headers(request: AppRequest, response: HTTPResponse) -> None:
    """Sanic response middleware: CORS headers for the origins the user allowed."""
    origin = request.headers.get("origin")
    if origin is not None and _origin_allowed(origin.lower(), request.app.ctx.snapshot):
        response.headers["access-control-allow-origin"] = origin
        response.headers["access-control-expose-headers"] = _EXPOSE_HEADERS
        response.headers["vary"] = "Origin"
