#!/usr/bin/env python3
"""Take the screenshots of docs/ui.md from a fresh `chain429 demo`, so they stay current.

Starts the demo on a free port, sends it some traffic (plain and streamed
requests, so every page has something to show), then signs in to the web UI
with the demo's admin key in Chromium and saves one PNG per page into
docs/ui/. Needs the `test` extra (Playwright) and Debian's chromium
(`apt-get install -y chromium`; Playwright's own browser download is not
used).

    python docs/screenshots.py [--out docs/ui] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from chain429.fakes.demo import CHAIN, DEMO_ADMIN_KEY, DEMO_KEY

DOCS = Path(__file__).resolve().parent
# Two clients for the Clients page: their keys are in the demo's environment only.
CLIENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "alice": ("c429-screenshot-alice-0123456789abcdef", {"requestsPerMinute": 30}),
    "ci-bot": (
        "c429-screenshot-ci-bot-0123456789abcdef",
        {"chains": [CHAIN], "requestsPerDay": 500},
    ),
}
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
WIDTH, HEIGHT = 1280, 860


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def demo() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chain429.cli.main", "demo", "--port", str(port)],
        env={**os.environ, **{client_var(name): key for name, (key, _) in CLIENTS.items()}},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("chain429 demo did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def client_var(name: str) -> str:
    return f"CHAIN429_CLIENT_{name.upper().replace('-', '_')}_KEY"


def traffic(url: str) -> None:
    """Requests through the demo: the chain, an entry model, a stream, one bad model,
    and some from each client (added over the admin API, as `chain429 client add` would)."""
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    hello = [{"role": "user", "content": "Say hello"}]
    admin = {"authorization": f"Bearer {DEMO_ADMIN_KEY}"}
    for name, (key, limits) in CLIENTS.items():
        body = {"key": f"${{{client_var(name)}}}", **limits}
        httpx.put(f"{url}/v1/admin/clients/{name}", json=body, headers=admin).raise_for_status()
        for _ in range(5 if name == "alice" else 3):
            httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": CHAIN, "messages": hello}, timeout=30)  # fmt: skip
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(24):
            model = "steady-8b" if i % 6 == 5 else CHAIN
            client.post("/v1/chat/completions", json={"model": model, "messages": hello})
        for _ in range(3):
            body = {"model": CHAIN, "messages": hello, "stream": True}
            with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                for _ in answer.iter_bytes():
                    pass
    time.sleep(0.5)  # the request log is written off the request path


def shoot(url: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": WIDTH, "height": HEIGHT}, color_scheme="light"
        )
        page = context.new_page()
        page.goto(f"{url}/ui/")
        page.fill("#key", DEMO_ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#stat-requests .value")

        def snap(name: str, **kwargs: Any) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), **kwargs)
            saved.append(path)

        page.wait_for_selector(".chart")
        snap("overview", full_page=True)
        page.goto(f"{url}/ui/#/limits")
        page.wait_for_selector(".entries-table tbody tr .badge")
        snap("limits", full_page=True)
        page.goto(f"{url}/ui/#/chains")
        card = page.locator(f"section.chain[data-chain='{CHAIN}']")
        card.get_by_role("button", name="Test streaming").click()
        card.locator(".results p", has_text="entries work").wait_for()
        snap("chains", full_page=True)
        page.goto(f"{url}/ui/#/providers")
        page.wait_for_selector("tr[data-provider]")
        page.get_by_role("button", name="Edit beta").click()
        snap("providers", full_page=True)
        page.goto(f"{url}/ui/#/clients")
        page.wait_for_selector(".clients-table tbody tr")
        snap("clients", full_page=True)
        page.goto(f"{url}/ui/#/requests")
        page.wait_for_selector(".requests-table tbody tr")
        snap("requests")
        page.locator(".requests-table tbody tr a").last.click()
        page.wait_for_selector(".trail")
        snap("request", full_page=True)
        page.goto(f"{url}/ui/#/config")
        page.wait_for_selector("#file-diff .banner")
        snap("config")
        page.goto(f"{url}/ui/#/playground")
        page.wait_for_selector("#pg-model option", state="attached")
        page.fill("#pg-prompt", "Say hello")
        page.click("#pg-send")
        page.wait_for_selector("#pg-headers .trace")
        page.locator("#pg-chat .msg.assistant .text", has_text="chain429.").wait_for()
        snap("playground")
        phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
        page = phone.new_page()
        page.goto(f"{url}/ui/")
        page.fill("#key", DEMO_ADMIN_KEY)
        page.click("button[type=submit]")
        page.goto(f"{url}/ui/#/limits")
        page.wait_for_selector(".entries-table tbody tr .badge")
        snap("limits-phone-dark")
        browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "ui", help="Where the PNGs go.")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="The Chromium to drive.")
    args = parser.parse_args()
    with demo() as url:
        traffic(url)
        for path in shoot(url, args.out, args.chromium):
            print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
