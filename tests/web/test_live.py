"""The UI as things happen: a 429 turns into a cooldown with a ticking countdown and is
cleared, a request's attempt trail, a chain test streaming each entry's text, the playground."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from chain429.fakes.provider import Reply

from .helpers import PAGES, visit

TRAIL = "alpha/alpha-model=429,beta/beta-model=200"


def seconds_left(text: str) -> int:
    """`in 1 min 58 s` -> 118."""
    minutes = re.search(r"(\d+) min", text)
    seconds = re.search(r"(\d+) s", text)
    return (int(minutes.group(1)) if minutes else 0) * 60 + (
        int(seconds.group(1)) if seconds else 0
    )


def test_a_429_shows_as_a_cooldown_counting_down_and_is_cleared(ui_server, tab):
    server = ui_server(keys=False)
    server.fakes["alpha"].script(Reply.rate_limited(retry_after="120"))
    assert server.chat().headers["x-429chain-trace"] == TRAIL
    page = tab.open(server.url + "/ui/#/limits")
    row = page.locator(".entries-table tbody tr", has_text="alpha/alpha-model").filter(
        has_text="main"
    )
    expect(row.locator(".badge")).to_have_text("cooling")
    expect(row).to_contain_text("set by provider's rate-limit headers")
    expect(page.locator(".next-picks [data-chain=main]")).to_contain_text("main → beta/beta-model")
    first = seconds_left(row.locator(".countdown .left").inner_text())
    assert 100 <= first <= 126  # Retry-After 120, plus up to 5% jitter
    time.sleep(1.3)
    assert seconds_left(row.locator(".countdown .left").inner_text()) < first  # it ticks
    clear = row.get_by_role("button", name="Clear the cooldown of alpha/alpha-model")
    clear.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".toast")).to_contain_text("Cleared 1 cooldown of alpha/alpha-model")
    expect(row.locator(".badge")).to_have_text("available")
    expect(page.locator("#no-blocks")).to_be_visible()
    assert server.chat().headers["x-429chain-trace"] == "alpha/alpha-model=200"
    assert tab.errors == []


def test_a_requests_attempt_trail(ui_server, tab):
    server = ui_server(keys=False)
    server.fakes["alpha"].script(Reply.rate_limited(retry_after="30"))
    request_id = server.chat().headers["x-request-id"]
    server.chat()
    server.logged(2)
    page = tab.open(server.url + "/ui/#/requests?chain=main")
    page.wait_for_selector(PAGES["requests"])
    assert page.locator(".requests-table tbody tr").count() == 2
    page.locator(f"tr[data-id='{request_id}'] a").click()
    page.wait_for_selector(".trail")
    assert page.url.endswith(f"#/requests/{request_id}")
    rows = page.locator(".trail tbody tr")
    expect(rows).to_have_count(2)
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "alpha/alpha-model" in first and "429" in first and "rate limited" in first
    assert re.search(r"\b(29|3[0-2]) s\b", first)  # the cooldown it set: 30 s, and jitter
    assert "beta/beta-model" in second and "200" in second
    # A filter that matches nothing says so; the other request skipped alpha without a call.
    visit(page, server.url, "requests")
    page.fill("#filter-status", "503")
    page.click("button:has-text('Apply')")
    expect(page.locator("main .empty")).to_have_text("No requests match.")
    assert "status=503" in page.url
    assert tab.errors == []


def test_the_request_log_pages_with_the_servers_cursors(ui_server, tab):
    server = ui_server(keys=False)
    ids = [server.chat().headers["x-request-id"] for _ in range(3)]
    server.logged(3)
    page = tab.open(server.url + "/ui/#/requests?limit=2")
    rows = page.locator(".requests-table tbody tr")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).get_attribute("data-id") for i in range(2)] == ids[:0:-1]  # newest first
    page.click("#older")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-id") == ids[0]
    assert page.locator("#older").is_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(2)
    assert rows.first.get_attribute("data-id") == ids[2]
    assert tab.errors == []


def test_a_chain_test_streams_each_entrys_text_live(ui_server, tab):
    server = ui_server(keys=False)
    slow = Reply.stream("one two three four five six", chunk_delay=0.15)
    server.fakes["alpha"].always(lambda request: slow if request.json().get("stream") else Reply())
    page = tab.open(server.url + "/ui/#/chains")
    page.wait_for_selector(PAGES["chains"])
    card = page.locator("section.chain[data-chain=main]")
    card.get_by_role("button", name="Test streaming").click()
    alpha = card.locator(".probe-entry[data-index='0'] .said")
    beta = card.locator(".probe-entry[data-index='1']")
    expect(beta).to_have_attribute("data-result", "ok")  # beta is done while alpha still talks
    expect(alpha).to_contain_text("one")
    partial = alpha.inner_text()
    assert partial != "one two three four five six"  # seen mid-stream
    expect(alpha).to_have_text("one two three four five six")
    expect(card.locator(".probe-entry[data-index='0']")).to_have_attribute("data-result", "ok")
    expect(card.locator(".results p")).to_have_text("2 of 2 entries work (streaming).")
    assert "Hello from beta" in beta.inner_text()
    # The same without streaming: each entry's answer and its HTTP status.
    card.get_by_role("button", name="Test", exact=True).click()
    expect(card.locator(".results p")).to_have_text("2 of 2 entries work.")
    assert "HTTP 200" in card.locator(".probe-entry[data-index='1']").inner_text()
    assert tab.errors == []


def test_the_playground_streams_an_answer_with_the_headers_that_explain_it(ui_server, tab):
    server = ui_server(keys=False)
    server.fakes["alpha"].script(Reply.rate_limited(retry_after="60"))
    page = tab.open(server.url + "/ui/#/playground")
    page.wait_for_selector(PAGES["playground"], state="attached")
    page.fill("#pg-prompt", "Say hello")
    page.keyboard.press("Control+Enter")
    answer = page.locator("#pg-chat .msg.assistant .text").last
    expect(answer).to_have_text("Hello from beta, streamed word by word through chain429.")
    about = page.locator("#pg-headers")
    expect(about).to_contain_text("first token after")
    assert "beta/beta-model" in about.inner_text()
    assert "alpha/alpha-model = 429" in about.inner_text()
    assert "beta/beta-model = 200" in about.inner_text()
    # The request id leads to its trail.
    about.locator("a").click()
    page.wait_for_selector(".trail")
    expect(page.locator(".trail tbody tr")).to_have_count(2)
    assert tab.errors == []


def test_an_entry_is_paused_and_resumed_from_live_limits(ui_server, tab):
    server = ui_server(keys=False)
    page = tab.open(server.url + "/ui/#/limits")
    row = page.locator(".entries-table tbody tr", has_text="alpha/alpha-model").filter(
        has_text="main"
    )
    expect(row.locator(".badge")).to_have_text("available")
    row.get_by_role("button", name="Pause alpha/alpha-model").click()
    expect(page.locator(".toast")).to_contain_text("Paused alpha/alpha-model.")
    expect(row.locator(".badge")).to_have_text("paused")
    expect(row).to_contain_text("entry alpha/alpha-model paused by open, since")
    expect(page.locator(".next-picks [data-chain=main]")).to_contain_text("(paused)")
    assert server.chat().headers["x-429chain-trace"] == (
        "alpha/alpha-model=skip:paused,beta/beta-model=200"
    )
    row.get_by_role("button", name="Resume alpha/alpha-model").click()
    expect(row.locator(".badge")).to_have_text("available")
    assert server.chat().headers["x-429chain-trace"] == "alpha/alpha-model=200"
    assert tab.errors == []
