"""Browser tests of the web UI: Debian's Chromium driven by Playwright, against real servers.

One browser for the whole session (starting Chromium is the slow part); a
fresh context (its own sessionStorage) per test. Each test starts a real
chain429 on 127.0.0.1 with a config file on disk, a request log and fake
providers that stream when asked.

Chromium comes from Debian (`apt-get install -y chromium`; `.ci/run` installs
it): Playwright's own browser download is not available here. Without it the
tests are skipped, unless CHAIN429_REQUIRE_BROWSER is set (CI sets it), when
they fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain429.config import load_config
from chain429.demo import answers_as_asked
from chain429.server import create_app
from chain429.serving import ServerThread, open_request_log
from chain429.testing import FakeProvider

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


@pytest.fixture
def ui_server(
    fake: Callable[..., FakeProvider], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., UiServer]]:
    """Start a chain429 for the UI: `keys=False` is keyless loopback mode."""
    monkeypatch.setenv(KEY_VAR, "fake-provider-key")
    started: list[tuple[ServerThread, Any]] = []

    def start(keys: bool = True, admin_keys: bool = True, gamma_name: str = "Gamma") -> UiServer:
        fakes = {
            name: fake(name, default=answers_as_asked(name, 0.02))
            for name in ("alpha", "beta", "gamma")
        }
        lines = ""
        if keys:
            lines += f"  apiKeys: [{PROXY_KEY}]\n"
            if admin_keys:
                lines += f"  adminKeys: [{ADMIN_KEY}]\n"
        path = tmp_path / "chain429.yaml"
        path.write_text(
            CONFIG.format(
                keys=lines,
                db=tmp_path / "log.db",
                var=KEY_VAR,
                gamma_name=gamma_name,
                **{name: f.base_url for name, f in fakes.items()},
            )
        )
        config = load_config(path)
        telemetry = open_request_log(config)
        server = ServerThread(create_app(config, config_path=path, telemetry=telemetry)).start()
        started.append((server, telemetry))
        return UiServer(
            server,
            path,
            fakes,
            ADMIN_KEY if keys and admin_keys else (PROXY_KEY if keys else None),
            PROXY_KEY if keys else None,
        )

    yield start
    for server, _ in started:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
        if os.environ.get("CHAIN429_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page in a fresh browser context, with what its console said."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        self.page.goto(url)
        return self.page


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(5000)
    page = context.new_page()
    found = Tab(page)
    page.on(
        "console", lambda message: message.type == "error" and found.errors.append(message.text)
    )
    page.on("pageerror", lambda error: found.errors.append(f"uncaught: {error}"))
    yield found
    context.close()


def sign_in(page: Any, key: str) -> None:
    page.fill("#key", key)
    page.click("button[type=submit]")


# Each page, and what shows once its data is in.
PAGES = {
    "overview": "#stat-requests .value",
    "limits": ".entries-table tbody tr",
    "chains": "#chain-list section.chain",
    "providers": "tr[data-provider]",
    "requests": ".requests-table tbody tr",
    "config": "#config-yaml",
    "playground": "#pg-model option",
}


def visit(page: Any, url: str, name: str) -> None:
    """Open one page of the UI and wait until its data is shown."""
    page.goto(f"{url}/ui/#/{name}")
    page.wait_for_selector(PAGES[name], state="attached")
