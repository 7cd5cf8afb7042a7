"""What the browser tests share: the servers they start, the keys, the pages, how to open them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chain429.fakes.provider import FakeProvider
from chain429.server.serving import ServerThread

CHROMIUM = os.environ.get("CHAIN429_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium phones home at start, and
# this machine's closed network refuses it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "ui-admin-key-0123456789"
PROXY_KEY = "ui-proxy-key-0123456789"
KEY_VAR = "UI_TEST_API_KEY"
HELLO = [{"role": "user", "content": "hi"}]

CONFIG = """\
# chain429 web UI test config: this comment must survive every edit
version: 1

settings:
{keys}  defaultChain: main   # the fallback chain
  databaseUrl: sqlite:///{db}

providers:
  # the first provider
  - id: alpha
    name: Alpha
    type: generic-openai
    baseUrl: {alpha}
    apiKey: ${{{var}}}
  - id: beta
    name: Beta
    type: generic-openai
    baseUrl: {beta}
    apiKey: ${{{var}}}
  - id: gamma
    name: {gamma_name}
    type: generic-openai
    baseUrl: {gamma}
    apiKey: ${{{var}}}

chains:
  - name: main
    entries:
      - provider: alpha
        model: alpha-model
      - provider: beta
        model: beta-model
  - name: spare
    entries:
      - provider: gamma
        model: gamma-model
"""


@dataclass
class UiServer:
    """A running chain429 with its config file, its fakes and a proxy-key client."""

    server: ServerThread
    path: Path
    fakes: dict[str, FakeProvider]
    admin_key: str | None
    proxy_key: str | None

    @property
    def url(self) -> str:
        return self.server.url

    def chat(self, model: str = "main") -> httpx.Response:
        headers = {"authorization": f"Bearer {self.proxy_key}"} if self.proxy_key else {}
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            headers=headers,
            json={"model": model, "messages": HELLO},
            timeout=10,
        )

    def admin(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        return httpx.request(method, self.url + route, headers=headers, timeout=10, **kwargs)

    def logged(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The request log once it holds `count` requests (it is written off the request path)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.admin("GET", "/v1/stats/requests").json()["data"]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@dataclass
class Tab:
    """A page in a fresh browser context, with what its console said."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        self.page.goto(url)
        return self.page


def add_client(server: UiServer, monkeypatch: Any, name: str, key: str, **fields: Any) -> None:
    """A client over the admin API, its key in the server's environment (where the API
    wants the `${VAR}` it names to be set)."""
    var = f"CHAIN429_CLIENT_{name.upper()}_KEY"
    monkeypatch.setenv(var, key)
    answer = server.admin("PUT", f"/v1/admin/clients/{name}", json={"key": f"${{{var}}}", **fields})
    assert answer.status_code == 200, answer.text


def sign_in(page: Any, key: str) -> None:
    page.fill("#key", key)
    page.click("button[type=submit]")


# Each page, and what shows once its data is in.
PAGES = {
    "overview": "#stat-requests .value",
    "limits": ".entries-table tbody tr",
    "chains": "#chain-list section.chain",
    "providers": "tr[data-provider]",
    "clients": ".clients-table tbody tr",
    "requests": ".requests-table tbody tr",
    "config": "#config-yaml",
    "playground": "#pg-model option",
}


def visit(page: Any, url: str, name: str) -> None:
    """Open one page of the UI and wait until its data is shown."""
    page.goto(f"{url}/ui/#/{name}")
    page.wait_for_selector(PAGES[name], state="attached")


def open_signed_in(tab: Any, url: str, key: str, name: str = "overview") -> Any:
    """Open one page of the UI in `tab`, sign in with `key`, wait for its data; the 401
    that asked for the key is not one of the page's errors."""
    page = tab.open(f"{url}/ui/" + ("" if name == "overview" else f"#/{name}"))
    sign_in(page, key)
    page.wait_for_selector(PAGES[name])
    tab.errors.clear()
    return page
