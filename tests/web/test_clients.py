"""Clients in a real Chromium: who used the shared proxy, what it cost, and never a key."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from .helpers import PAGES, add_client, open_signed_in, visit

ALICE_KEY = "c429-alice-test-key-0123456789abcdef"
BOB_KEY = "c429-bob-test-key-0123456789abcdef"


def sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def priced(server) -> None:
    """alpha answers first and is priced: its answers cost."""
    alpha = server.admin("GET", "/v1/admin/config").json()["config"]["providers"][0]
    alpha["price"] = {"inputPerMTok": 1000, "outputPerMTok": 1000}
    assert server.admin("PUT", "/v1/admin/providers/alpha", json=alpha).status_code == 200


def test_the_clients_page_shows_who_used_what_and_what_it_cost_and_no_key(
    ui_server, tab, monkeypatch
):
    server = ui_server()
    priced(server)
    add_client(server, monkeypatch, "alice", ALICE_KEY, chains=["main"], requestsPerMinute=2,
               paidBudgetUsdPerDay=0.5)  # fmt: skip
    add_client(server, monkeypatch, "bob", BOB_KEY)
    alice = sdk(server, ALICE_KEY)
    for _ in range(2):
        alice.chat.completions.create(model="main", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):  # her own limit: 2 a minute
        alice.chat.completions.create(model="main", messages=[{"role": "user", "content": "hi"}])
    assert server.chat().status_code == 200  # an apiKeys caller: anonymous
    rows = server.logged(4)
    cost = sum(r["cost_usd"] or 0 for r in rows if r["client"] == "alice")
    assert cost > 0

    page = open_signed_in(tab, server.url, server.admin_key)
    page.click("#nav a:text-is('Clients')")
    page.wait_for_selector(PAGES["clients"])
    row = page.locator(".clients-table tr[data-client=alice]")
    cells = row.locator("td")
    expect(cells.nth(0)).to_contain_text("alice")
    expect(cells.nth(0)).to_contain_text("${CHAIN429_CLIENT_ALICE_KEY}")
    expect(cells.nth(1)).to_have_text("main")
    expect(cells.nth(2)).to_contain_text("2 req/min: 0 left")
    expect(cells.nth(3)).to_contain_text("$0.50/day")
    expect(cells.nth(4)).to_have_text("3")  # requests
    expect(cells.nth(6)).to_have_text("1")  # errors: the one over her limit
    expect(cells.nth(7)).to_have_text("1")  # her own 429s
    expect(cells.nth(10)).to_have_text(f"${cost:.2f}")
    bob = page.locator(".clients-table tr[data-client=bob] td")
    expect(bob.nth(1)).to_have_text("all")
    expect(bob.nth(2)).to_have_text("none")
    expect(bob.nth(4)).to_have_text("0")
    anonymous = page.locator(".clients-table tr[data-client=''] td")
    expect(anonymous.nth(0)).to_have_text("(anonymous)")
    expect(anonymous.nth(4)).to_have_text("1")
    # No key anywhere in the page, nor in what it kept.
    html = page.content()
    for key in (ALICE_KEY, BOB_KEY, server.admin_key, server.proxy_key):
        assert key not in html
    assert page.evaluate("Object.values(sessionStorage)") == [server.admin_key]
    # A client's name opens its requests.
    row.get_by_role("link", name="alice").click()
    page.wait_for_selector(PAGES["requests"])
    expect(page.locator("#filter-client")).to_have_value("alice")
    expect(page.locator(".requests-table tbody tr")).to_have_count(3)
    # What each cost: her two answers were priced, the one over her limit reached nobody.
    costs = page.locator(".requests-table tbody tr td:nth-child(11)").all_inner_texts()
    assert sorted(costs)[0].startswith("$") and sorted(costs)[1].startswith("$")
    assert sorted(costs)[2] == "\u2013"  # an en dash: no cost
    # So does the anonymous callers' row.
    page.go_back()
    page.wait_for_selector(PAGES["clients"])
    page.locator(".clients-table tr[data-client='']").get_by_role("link").click()
    page.wait_for_selector(PAGES["requests"])
    expect(page.locator("#filter-client")).to_have_value("-")
    expect(page.locator(".requests-table tbody tr")).to_have_count(1)
    assert tab.errors == []


def test_no_clients_says_how_to_add_one(ui_server, tab):
    server = ui_server(keys=False)
    page = tab.open(server.url + "/ui/#/clients")
    page.wait_for_selector("#page-clients .banner")
    expect(page.locator("#page-clients")).to_contain_text("chain429 client add NAME")
    expect(page.locator(".clients-table")).to_have_count(0)
    server.chat()
    server.logged(1)
    visit(page, server.url, "overview")
    visit(page, server.url, "clients")  # the anonymous callers, under the same advice
    expect(page.locator(".clients-table tbody tr")).to_have_count(1)
    expect(page.locator(".clients-table tbody td").first).to_have_text("(anonymous)")
    expect(page.locator("#page-clients")).to_contain_text("chain429 client add NAME")
    assert tab.errors == []
