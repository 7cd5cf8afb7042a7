"""Serving the web UI over HTTP: where it is, how it is cached, the headers that guard it,
and what its files may and may not do (checked on the files the server hands out)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sanic import Sanic

from chain429.server.web_ui import assets, web_ui_routes
from fixtures.servers import chain_config, provider_entry


@pytest.fixture
def served(fake, proxy):
    a = fake("a")
    return proxy(chain_config([provider_entry("a", a)], [("a", "model-a")]))


def get(p, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(p.url + path, timeout=10, **kwargs)  # no key: the UI's files need none


def test_the_root_and_bare_ui_redirect_to_the_ui(served):
    for path in ("/", "/ui"):
        answer = get(served, path)
        assert (answer.status_code, answer.headers["location"]) == (302, "/ui/")


def test_the_page_comes_with_a_strict_policy_and_an_etag(served):
    answer = get(served, "/ui/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-cache"
    etag = answer.headers["etag"]
    same = get(served, "/ui/", headers={"if-none-match": etag})
    assert (same.status_code, same.content) == (304, b"")
    assert get(served, "/ui/", headers={"if-none-match": f'W/{etag}, "x"'}).status_code == 304
    assert get(served, "/ui/", headers={"if-none-match": '"other"'}).status_code == 200


def test_every_file_is_served_with_its_type(served):
    files = assets()
    assert {"index.html", "app.css", "js/app.js"} <= set(files)
    for name, asset in files.items():
        answer = get(served, f"/ui/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == asset.content_type
        assert answer.content == asset.body
    # An OpenAPI client sends a slash in a path parameter encoded.
    assert get(served, "/ui/js%2Fapp.js").content == files["js/app.js"].body


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/../chain429/server/app.py",
        "/ui/..%2F..%2Fpyproject.toml",
        "/ui/__init__.py",
    ],
)
def test_nothing_else_is_served(served, path):
    answer = get(served, path)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_a_foreign_host_gets_no_ui_on_a_keyless_server(fake, proxy):
    a = fake("a")
    config = chain_config([provider_entry("a", a)], [("a", "m")], settings={"apiKeys": []})
    p = proxy(config)
    assert get(p, "/ui/").status_code == 200
    assert get(p, "/ui/", headers={"host": "evil.example"}).status_code == 421


def test_the_ui_adds_no_middleware():
    """The proxy's request path runs what it ran before: the UI is routes only."""
    app = Sanic("web-ui-middleware-probe", configure_logging=False)
    before = (len(app.request_middleware), len(app.response_middleware))
    app.blueprint(web_ui_routes)
    assert (len(app.request_middleware), len(app.response_middleware)) == before


# -- what the files do (read as the browser gets them) ------------------------------------


def _text(name: str) -> str:
    return assets()[name].body.decode("utf-8")


def _scripts() -> dict[str, str]:
    return {name: _text(name) for name in assets() if name.endswith(".js")}


def test_the_html_has_no_inline_script_handler_or_style():
    for name in (n for n in assets() if n.endswith(".html")):
        html = _text(name)
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, f"{name}: inline <script> (the policy would block it)"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{name}: an inline event handler"
        assert not re.search(r"\sstyle\s*=", html), f"{name}: an inline style"
        assert "<style" not in html


def test_every_module_import_resolves():
    scripts = _scripts()
    for name, source in scripts.items():
        folder = name.rpartition("/")[0]
        for target in re.findall(r"^import .* from \"(\.[^\"]+)\";", source, re.M):
            parts = [*folder.split("/"), *target.split("/")] if folder else target.split("/")
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                elif part not in (".", ""):
                    resolved.append(part)
            assert "/".join(resolved) in scripts, f"{name} imports a missing {target}"


def test_the_scripts_never_write_markup_or_keep_the_key_outside_the_session():
    forbidden = (
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
        r"|localStorage|document\.cookie"
    )
    for name, source in _scripts().items():
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("//"))
        found = re.findall(forbidden, code)
        if name == "js/dom.js":  # where the rule itself names what it refuses
            found = [f for f in found if f in ("localStorage", "document.cookie")]
        assert not found, f"{name} uses {found}"


def test_the_scripts_call_only_documented_routes(served):
    paths = httpx.get(served.url + "/openapi.json", timeout=10).json()["paths"]
    patterns = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in paths]
    called: set[str] = set()
    for source in _scripts().values():
        for literal in re.findall(r"[\"`](/(?:v1|health|openapi)[^\"`?]*)", source):
            literal = re.sub(r"\$\{query\(.*$", "", literal)  # a query string, not the path
            called.add(re.sub(r"\$\{[^}]*\}", "x", literal))
    assert {"/v1/admin/limits/clear", "/v1/ratelimits", "/v1/stats/requests/x"} <= called
    undocumented = sorted(c for c in called if not any(p.match(c) for p in patterns))
    assert undocumented == [], f"the UI calls routes /openapi.json does not list: {undocumented}"
