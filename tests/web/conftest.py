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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chain429.config.loader import load_config
from chain429.fakes.demo import answers_as_asked
from chain429.fakes.provider import FakeProvider
from chain429.server.app import create_app
from chain429.server.serving import ServerThread, open_request_log

from .helpers import ADMIN_KEY, CHROMIUM, CHROMIUM_ARGS, CONFIG, KEY_VAR, PROXY_KEY, Tab, UiServer


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
