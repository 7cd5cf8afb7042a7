"""Changing the config in the browser: the file on disk, the CLI and the next request agree,
and a change made underneath is never overwritten unseen."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from playwright.sync_api import expect

from .helpers import PAGES, open_signed_in, sign_in

CHAIN429 = [sys.executable, "-m", "chain429.cli.main"]
COMMENTS = (
    "# chain429 web UI test config: this comment must survive every edit",
    "# the first provider",
    "# the fallback chain",
)


def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAIN429_ADMIN_KEY": key or ""}
    return subprocess.run(
        [*CHAIN429, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def chain_card(page, name):
    return page.locator(f"section.chain[data-chain='{name}']")


def saved(page, doing):
    """What the page said once the edit `doing` was saved."""
    notice = page.locator("#chains-notice .banner.ok")
    expect(notice).to_contain_text(doing)
    return notice.inner_text()


def test_a_chain_made_in_the_ui_is_in_the_file_with_its_comments_and_in_the_cli(ui_server, tab):
    server = ui_server()
    page = open_signed_in(tab, server.url, server.admin_key, "chains")
    page.click("#create-chain summary")
    page.fill("#new-chain-name", "ui-made")
    page.select_option("#new-chain-provider", "beta")
    page.fill("#new-chain-model", "beta-model")
    page.click("#create-chain button[type=submit]")
    assert "generation 2 in force" in saved(page, "Created chain ui-made")
    chain_card(page, "ui-made").wait_for()
    text = server.path.read_text()
    assert "- name: ui-made" in text and all(comment in text for comment in COMMENTS)
    listed = cli("chain", "list", "--json", "-c", str(server.path))
    assert listed.returncode == 0, listed.stderr
    assert {
        "name": "ui-made",
        "kind": "chat",
        "default": False,
        "entries": [{"provider": "beta", "model": "beta-model"}],
    } in json.loads(listed.stdout)
    # ...and the server serves it at once.
    assert server.chat("ui-made").headers["x-429chain-provider"] == "beta/beta-model"
    # Make it the default, then delete the other spare chain: both land in the file.
    chain_card(page, "ui-made").get_by_role("button", name="Make default").click()
    saved(page, "Made ui-made the default chain")
    chain_card(page, "ui-made").locator(".badge.info", has_text="default").wait_for()
    assert "defaultChain: ui-made" in server.path.read_text()
    chain_card(page, "spare").get_by_role("button", name="Delete").click()
    chain_card(page, "spare").get_by_role("button", name="Delete it").click()
    saved(page, "Deleted chain spare")
    expect(chain_card(page, "spare")).to_have_count(0)
    assert "name: spare" not in server.path.read_text()
    assert tab.errors == []


def test_reordering_entries_changes_the_next_requests_trace(ui_server, tab):
    server = ui_server(keys=False)
    assert server.chat().headers["x-429chain-trace"] == "alpha/alpha-model=200"
    page = tab.open(server.url + "/ui/#/chains")
    page.wait_for_selector(PAGES["chains"])
    main = chain_card(page, "main")
    # With the keyboard: focus "move up" on beta and press Enter.
    main.get_by_role("button", name="Move beta/beta-model up").focus()
    page.keyboard.press("Enter")
    saved(page, "Moved beta/beta-model to position 1 of main")
    assert server.chat().headers["x-429chain-trace"] == "beta/beta-model=200"
    # Focus stays with the moved entry, so the keyboard user can go on.
    assert (
        page.evaluate("document.activeElement.getAttribute('aria-label')")
        == "Move beta/beta-model down"
    )
    # By dragging: alpha (now second) onto the top half of beta (now first).
    entries = main.locator("li.entry")
    entries.nth(1).drag_to(entries.nth(0), target_position={"x": 20, "y": 3})
    expect(main.locator("li.entry .what").first).to_have_text(re.compile("^alpha/"))
    assert server.chat().headers["x-429chain-trace"] == "alpha/alpha-model=200"
    # Add an entry, then remove one: the chain in the file follows.
    page.select_option("#add-provider-main", "gamma")
    page.fill("#add-model-main", "gamma-model")
    main.get_by_role("button", name="Add entry").click()
    main.locator("li.entry[data-label='gamma/gamma-model']").wait_for()
    main.get_by_role("button", name="Remove alpha/alpha-model from main").click()
    expect(main.locator("li.entry[data-label='alpha/alpha-model']")).to_have_count(0)
    assert server.admin("GET", "/v1/admin/config").json()["config"]["chains"][0]["entries"] == [
        {"provider": "beta", "model": "beta-model"},
        {"provider": "gamma", "model": "gamma-model"},
    ]
    assert tab.errors == []


def test_an_embeddings_chain_is_marked_and_stays_one_through_edits(ui_server, tab):
    server = ui_server(keys=False)
    body = {"kind": "embeddings", "entries": [{"provider": "gamma", "model": "gamma-embed"}]}
    assert server.admin("PUT", "/v1/admin/chains/spare", json=body).status_code == 200
    page = tab.open(server.url + "/ui/#/chains")
    page.wait_for_selector(PAGES["chains"])
    spare = chain_card(page, "spare")
    expect(spare.locator(".badge", has_text="embeddings")).to_have_count(1)
    expect(chain_card(page, "main").locator(".badge", has_text="embeddings")).to_have_count(0)
    page.select_option("#add-provider-spare", "beta")
    page.fill("#add-model-spare", "beta-embed")
    spare.get_by_role("button", name="Add entry").click()
    spare.locator("li.entry[data-label='beta/beta-embed']").wait_for()
    chain = server.admin("GET", "/v1/admin/config").json()["config"]["chains"][1]
    assert chain["kind"] == "embeddings" and len(chain["entries"]) == 2
    assert tab.errors == []


def test_an_edit_made_underneath_is_shown_not_overwritten(ui_server, tab):
    server = ui_server()
    page = tab.open(server.url + "/ui/#/chains")
    sign_in(page, server.admin_key)
    page.wait_for_selector(PAGES["chains"])
    # Someone else changes the file with the CLI, which tells the server to reload.
    edited = cli(
        "chain",
        "add",
        "from-cli",
        "--entry",
        "gamma:gamma-model",
        "-c",
        str(server.path),
        "--server",
        server.url,
        key=server.admin_key,
    )
    assert edited.returncode == 0, edited.stderr
    assert f"the server at {server.url} took the change" in edited.stderr
    # The page still holds generation 1: its edit is refused and it shows the new state.
    chain_card(page, "main").get_by_role("button", name="Move beta/beta-model up").click()
    page.wait_for_selector("#chains-notice .conflict")
    assert "Not saved: the config changed underneath" in page.inner_text("#chains-notice")
    chain_card(page, "from-cli").wait_for()
    text = server.path.read_text()
    assert "from-cli" in text
    assert text.index("model: alpha-model") < text.index("model: beta-model")  # not moved
    # Now that it has seen the change, the same edit goes through.
    chain_card(page, "main").get_by_role("button", name="Move beta/beta-model up").click()
    assert "in force" in saved(page, "Moved beta/beta-model")
    assert server.chat().headers["x-429chain-trace"].startswith("beta/beta-model=")


def test_providers_are_added_from_a_preset_edited_tested_and_removed(ui_server, tab):
    server = ui_server(keys=False)
    page = tab.open(server.url + "/ui/#/providers")
    page.wait_for_selector(PAGES["providers"])
    page.click("#add-provider")
    page.select_option("#provider-type", "generic-openai")
    page.fill("#provider-id", "delta")
    page.fill("#provider-base-url", server.fakes["beta"].base_url)
    page.fill("#provider-key-var", "UI_TEST_API_KEY")
    page.fill("#limit-requestsPerMinute", "30")
    page.click("#provider-form button[type=submit]")
    page.wait_for_selector("tr[data-provider=delta]")
    text = server.path.read_text()
    assert (
        "id: delta" in text
        and "apiKey: ${UI_TEST_API_KEY}" in text
        and "requestsPerMinute: 30" in text
    )
    assert "fake-provider-key" not in text
    # Edit: the key is not asked again for a change that keeps the URL.
    page.get_by_role("button", name="Edit alpha").click()
    page.fill("#provider-timeout", "4000")
    page.click("#provider-form button[type=submit]")
    expect(page.locator("tr[data-provider=alpha]")).to_contain_text("timeout 4,000 ms")
    config = server.admin("GET", "/v1/admin/config").json()["config"]
    alpha = next(p for p in config["providers"] if p["id"] == "alpha")
    assert alpha["timeout"] == 4000 and alpha["apiKey"] == "${UI_TEST_API_KEY}"
    # Test: one call per model it serves, shown as it comes.
    page.get_by_role("button", name="Test alpha").click()
    page.wait_for_selector("#provider-test .probe-entry[data-result=ok]")
    assert "Hello from alpha" in page.inner_text("#provider-test")
    # Remove gamma: the page says first what goes with it (all of chain spare).
    page.get_by_role("button", name="Remove gamma").click()
    assert "chain spare: all its entries, so the chain is deleted" in page.inner_text(
        "#remove-provider"
    )
    page.get_by_role("button", name="Remove it and its entries").click()
    expect(page.locator("tr[data-provider=gamma]")).to_have_count(0)
    text = server.path.read_text()
    assert "id: gamma" not in text and "name: spare" not in text
    assert tab.errors == []


def test_the_config_page_validates_diffs_and_reloads_and_a_rejected_file_shows(ui_server, tab):
    server = ui_server(keys=False)
    page = tab.open(server.url + "/ui/#/config")
    page.wait_for_selector(PAGES["config"])
    page.wait_for_selector("#file-diff .banner.ok")
    page.click("#validate")
    page.wait_for_selector("#pad-result .banner.ok")  # the YAML shown is the config, valid
    page.fill(
        "#yaml-pad",
        page.input_value("#yaml-pad").replace("defaultChain: main", "defaultChain: nowhere"),
    )
    page.click("#validate")
    page.wait_for_selector("#pad-result .banner.error")
    assert "nowhere" in page.inner_text("#pad-result")
    # A broken file on disk: the server keeps its config, the page says why and where.
    server.path.write_text(server.path.read_text().replace("version: 1", "version: 7"))
    page.click("#reload")
    expect(page.locator("#reload-result .banner.error")).to_contain_text(
        "generation 1 stays in force"
    )
    expect(page.locator("#file-diff .banner.error")).to_contain_text(
        "line 2: version: must be one of 1"
    )
    # The overview's health says so too, with the reason.
    page.goto(server.url + "/ui/#/overview")
    rejected = page.locator(".banner.error", has_text="The config file on disk was rejected")
    expect(rejected).to_contain_text("line 2: version: must be one of 1")
    # The browser logs each 422 it was shown; nothing else went wrong.
    assert [e for e in tab.errors if "status of 422" not in e] == []
