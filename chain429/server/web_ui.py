"""Serving the web UI: static files from the `chain429.web` package at `/ui/`.

The UI is a client of the documented API like the CLI (docs/ui.md): this
module only hands out its files, never data. They are read once per process
from the installed package (no build step, nothing generated) and kept in
memory with a content hash as their `ETag`; `Cache-Control: no-cache` makes
the browser revalidate each load, so an upgrade shows at once and an
unchanged file costs a 304. The engine does not import the web package: it
reads its files by package name, as data.

Every UI answer carries a Content-Security-Policy that allows scripts,
styles and connections from this origin only (no inline script, no `eval`,
no inline style), and headers that keep the page out of frames and its
address out of `Referer`. The policy adds a second wall behind the UI's own
rule of rendering every server value as text. These are routes, not
middleware: the proxy's request path (`/v1/chat/completions`) never runs
any of this.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from urllib.parse import unquote

from sanic import Blueprint
from sanic.response import HTTPResponse, empty, raw, redirect

from chain429.server.context import AppRequest
from chain429.server.errors import ApiError

__all__ = ["CONTENT_SECURITY_POLICY", "UI_PATH", "web_ui_routes"]

UI_PATH = "/ui/"
STATIC_PACKAGE = "chain429.web"
STATIC_DIR = "static"

# What the UI may load and talk to: its own origin, nothing else. `form-action
# 'none'`: every form is handled by script, so a form that did submit (script
# broken) must not carry its fields anywhere, the key field least of all.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
# The file types the UI ships; anything else in the package is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for item in folder.iterdir():
        name = f"{prefix}{item.name}"
        if item.name.startswith((".", "_")):
            continue
        if item.is_dir():
            found.update(_walk(item, f"{name}/"))
            continue
        suffix = "." + item.name.rpartition(".")[2]
        if suffix in CONTENT_TYPES:
            body = item.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:20]
            found[name] = Asset(body, CONTENT_TYPES[suffix], f'"{digest}"')
    return found


@functools.cache
def assets() -> dict[str, Asset]:
    """Every UI file by its path under /ui/ (`index.html`, `js/app.js`), read once."""
    return _walk(importlib.resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR))


def _not_modified(request: AppRequest, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if wanted is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
    return etag in tags or "*" in tags


def _serve(request: AppRequest, name: str) -> HTTPResponse:
    asset = assets().get(name)
    if asset is None:
        raise ApiError(404, f"No file {UI_PATH}{name} in the web UI.", code="not_found")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if _not_modified(request, asset.etag):
        return empty(304, headers)
    return raw(asset.body, 200, headers, asset.content_type)


# `/` and `/ui` redirect to `/ui/`; `/ui/<file>` serves the UI's files. No key needed:
# they hold no data, and every call they make for data goes through the API's keys.
web_ui_routes = Blueprint("web_ui")


@web_ui_routes.get("/", strict_slashes=True)
async def web_ui_root(request: AppRequest) -> HTTPResponse:
    return redirect(UI_PATH, status=302)


@web_ui_routes.get("/ui", strict_slashes=True)
async def web_ui_bare(request: AppRequest) -> HTTPResponse:
    return redirect(UI_PATH, status=302)


@web_ui_routes.get(UI_PATH, strict_slashes=True)
async def web_ui_index(request: AppRequest) -> HTTPResponse:
    return _serve(request, "index.html")


@web_ui_routes.get(f"{UI_PATH}<path:path>")
async def web_ui_file(request: AppRequest, path: str) -> HTTPResponse:
    # Names are looked up, never joined to a directory: `..` finds nothing. An
    # encoded slash (`js%2Fapp.js`, as OpenAPI clients send a path parameter) is one.
    return _serve(request, unquote(path))
