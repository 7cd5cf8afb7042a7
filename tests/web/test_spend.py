"""The overview in a real Chromium: what answers cost, and what the paid budget has left."""

from __future__ import annotations

from playwright.sync_api import expect

from .helpers import ADMIN_KEY, open_signed_in


def test_the_overview_shows_spend_and_the_paid_budget(ui_server, tab):
    server = ui_server()
    # alpha answers first: priced, so its answers cost; a paid budget for the day.
    alpha = server.admin("GET", "/v1/admin/config").json()["config"]["providers"][0]
    alpha["price"] = {"inputPerMTok": 1000, "outputPerMTok": 1000}
    assert server.admin("PUT", "/v1/admin/providers/alpha", json=alpha).status_code == 200
    patch = {"paidBudgetUsdPerDay": 5}
    assert server.admin("PATCH", "/v1/admin/settings", json=patch).status_code == 200
    assert server.chat().status_code == 200
    (row,) = server.logged(1)
    assert row["cost_usd"] > 0

    page = open_signed_in(tab, server.url, ADMIN_KEY)
    spend = page.locator("#stat-spend")
    expect(spend.locator(".value")).to_have_text(f"${row['cost_usd']:.2f}")
    expect(spend.locator(".sub")).to_have_text("1 priced answer")
    # And which provider and chain it went to.
    cost = f"${row['cost_usd']:.2f}"
    provider_row = page.locator("table:has(caption:text-matches('Per provider')) tbody tr")
    expect(provider_row.filter(has_text="alpha").locator("td").last).to_have_text(cost)
    chain_row = page.locator("table:has(caption:text-is('Per chain')) tbody tr")
    expect(chain_row.filter(has_text=row["chain"]).locator("td").last).to_have_text(cost)
    # alpha is not paid: the budget is all there.
    budget = page.locator("dt", has_text="Paid budget")
    expect(budget).to_have_count(1)
    expect(page.locator("dt:has-text('Paid budget') + dd")).to_contain_text(
        "$5.00 of $5.00 left today ($0.00 spent, $0.00 reserved) · resets"
    )
    assert tab.errors == []
