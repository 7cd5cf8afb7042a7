"""Chains of two kinds in a real Chromium: an embeddings chain is made from the form,
is tested without streaming, and stays out of the playground's chat."""

from __future__ import annotations

from playwright.sync_api import expect

from .helpers import PAGES, open_signed_in


def chain_card(page, name):
    return page.locator(f"section.chain[data-chain='{name}']")


def test_the_new_chain_form_makes_an_embeddings_chain(ui_server, tab):
    server = ui_server()
    page = open_signed_in(tab, server.url, server.admin_key, "chains")
    page.click("#create-chain summary")
    kinds = page.locator("#new-chain-kind option").all_inner_texts()
    assert kinds == ["chat", "embeddings"]
    expect(page.locator("#new-chain-kind")).to_have_value("chat")
    page.fill("#new-chain-name", "vectors")
    page.select_option("#new-chain-kind", "embeddings")
    page.select_option("#new-chain-provider", "gamma")
    page.fill("#new-chain-model", "gamma-embed")
    page.click("#create-chain button[type=submit]")
    expect(page.locator("#chains-notice .banner.ok")).to_contain_text(
        "Created embeddings chain vectors"
    )
    card = chain_card(page, "vectors")
    expect(card.locator(".badge", has_text="embeddings")).to_have_count(1)
    text = server.path.read_text()
    assert "  - name: vectors\n    kind: embeddings\n" in text
    # Embeddings do not stream: the plain test only; a chat chain keeps both.
    expect(card.get_by_role("button", name="Test", exact=True)).to_have_count(1)
    expect(card.get_by_role("button", name="Test streaming")).to_have_count(0)
    expect(chain_card(page, "main").get_by_role("button", name="Test streaming")).to_have_count(1)
    # The server serves it on /v1/embeddings at once.
    answer = server.admin("POST", "/v1/embeddings", json={"model": "vectors", "input": "hi"})
    assert answer.status_code == 200, answer.text
    # The form stays open, fresh: a chain made with it as it comes is a chat chain.
    expect(page.locator("#new-chain-kind")).to_have_value("chat")
    page.fill("#new-chain-name", "talk")
    page.fill("#new-chain-model", "alpha-model")
    page.click("#create-chain button[type=submit]")
    expect(page.locator("#chains-notice .banner.ok")).to_contain_text("Created chain talk")
    assert server.chat("talk").status_code == 200
    # ...written as `chain429 chain add` writes one: without a kind (chat is what none means).
    assert "  - name: talk\n    entries:\n" in server.path.read_text()
    assert tab.errors == []


def test_the_playground_offers_chat_chains_and_models_only(ui_server, tab):
    server = ui_server(keys=False)
    embed = {"kind": "embeddings", "entries": [{"provider": "gamma", "model": "gamma-embed"}]}
    assert server.admin("PUT", "/v1/admin/chains/vectors", json=embed).status_code == 200
    listed = {m["id"]: m["chain_kind"] for m in server.admin("GET", "/v1/models").json()["data"]}
    assert listed["vectors"] == listed["gamma-embed"] == "embeddings"
    page = tab.open(server.url + "/ui/#/playground")
    page.wait_for_selector(PAGES["playground"], state="attached")
    offered = page.locator("#pg-model option").evaluate_all("options => options.map(o => o.value)")
    assert "main" in offered and "spare" in offered and "alpha-model" in offered
    assert "vectors" not in offered and "gamma-embed" not in offered
    assert tab.errors == []
