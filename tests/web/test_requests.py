"""The request log in a real Chromium: who sent each request, on which route, and every
outcome a request can have, each one a filter."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from .helpers import add_client, open_signed_in

ALICE_KEY = "c429-alice-test-key-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]


def rows(page):
    return page.locator(".requests-table tbody tr")


def apply(page, **filters: str) -> None:
    for name, value in filters.items():
        page.select_option(f"#filter-{name}", value)
    page.get_by_role("button", name="Apply").click()


def test_requests_show_their_client_and_endpoint_and_filter_by_them(ui_server, tab, monkeypatch):
    server = ui_server()
    embed = {"kind": "embeddings", "entries": [{"provider": "gamma", "model": "gamma-embed"}]}
    assert server.admin("PUT", "/v1/admin/chains/embed", json=embed).status_code == 200
    assert server.admin("PUT", "/v1/admin/aliases/team", json={"chain": "main"}).status_code == 200
    add_client(server, monkeypatch, "alice", ALICE_KEY, chains=["main"])
    alice = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    alice.chat.completions.create(model="team", messages=HI)  # through the alias
    with pytest.raises(openai.PermissionDeniedError):  # not one of her chains
        alice.chat.completions.create(model="spare", messages=HI)
    proxy = openai.OpenAI(base_url=server.url + "/v1", api_key=server.proxy_key, max_retries=0)
    proxy.embeddings.create(model="embed", input="hello")
    with pytest.raises(openai.NotFoundError):  # an embeddings chain on the chat route
        proxy.chat.completions.create(model="embed", messages=HI)
    logged = server.logged(4)
    assert {(r["client"], r["endpoint"], r["outcome"]) for r in logged} == {
        ("alice", "chat", "success"),
        ("alice", "chat", "model_not_allowed"),
        (None, "embeddings", "success"),
        (None, "chat", "wrong_endpoint"),
    }

    page = open_signed_in(tab, server.url, server.admin_key, "requests")
    expect(rows(page)).to_have_count(4)
    outcomes = page.locator("#filter-outcome option").all_inner_texts()
    for word in ("client_rate_limited", "model_not_allowed", "wrong_endpoint", "success"):
        assert word in outcomes
    assert page.locator("#filter-endpoint option").all_inner_texts() == [
        "any", "chat", "completions", "embeddings"
    ]  # fmt: skip

    apply(page, client="alice")
    expect(rows(page)).to_have_count(2)
    assert page.url.endswith("#/requests?range=24h&client=alice")  # a bookmarkable view
    for row in rows(page).all():
        expect(row.locator("td").nth(1)).to_have_text("alice")
    apply(page, client="-")  # the anonymous callers
    expect(rows(page)).to_have_count(2)
    assert page.url.endswith("#/requests?range=24h&client=-")
    for row in rows(page).all():
        expect(row.locator("td").nth(1)).to_have_text("(anonymous)")
    apply(page, client="", endpoint="embeddings")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).locator("td").nth(1)).to_have_text("(anonymous)")
    expect(rows(page).locator("td").nth(2)).to_have_text("embeddings")
    expect(rows(page).locator("td").nth(3)).to_have_text("embed")
    apply(page, endpoint="", outcome="wrong_endpoint")
    expect(rows(page)).to_have_count(1)
    apply(page, outcome="client_rate_limited")
    expect(page.locator("main .empty")).to_have_text("No requests match.")

    # One of alice's requests: who sent it, and the alias it named.
    apply(page, client="alice", outcome="success")
    expect(rows(page)).to_have_count(1)
    rows(page).locator("a").click()
    page.wait_for_selector(".trail")
    facts = page.locator("main dl.facts")
    expect(facts.locator("dt:text-is('Client') + dd")).to_have_text("alice")
    expect(facts.locator("dt:text-is('Endpoint') + dd")).to_have_text("chat")
    expect(facts.locator("dt:text-is('Cost') + dd")).to_have_text("\u2013 (unpriced)")
    expect(facts.locator("dt:text-is('Model asked for') + dd")).to_have_text(
        "team (an alias of main)"
    )
    assert ALICE_KEY not in page.content()
    assert tab.errors == []
