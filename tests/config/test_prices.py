"""Prices and paid budgets in the config file: what loads, what is refused, and why."""

from __future__ import annotations

import textwrap

import pytest

from chain429.config.errors import ConfigError
from chain429.config.loader import parse_config_text
from chain429.config.model import Config
from chain429.routing.runtime import build_snapshot

PAID = """\
version: 1
settings:
  paidBudgetUsdPerDay: 2.5
providers:
  - id: free
    type: groq
    apiKey: k
  - id: openai
    type: openai
    apiKey: k
    paid: ${PAID}
chains:
  - name: main
    entries:
      - provider: free
        model: llama
      - provider: openai
        model: gpt-4o-mini
"""


def parse(text: str, **env: str) -> Config:
    return parse_config_text(textwrap.dedent(text), filename="c.yaml", environ=env)


def issues(text: str, **env: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text, **env)
    return [(i.line, i.path, i.message) for i in info.value.issues]


def test_a_paid_entry_without_a_price_under_a_budget_is_refused_where_it_is():
    # ${PAID} is "yes": read as the model reads a flag.
    ((line, path, message),) = issues(PAID, PAID="yes")
    assert (line, path) == (17, "chains[0].entries[1]")
    assert message.startswith(
        "paid entry openai/gpt-4o-mini has no price, and settings.paidBudgetUsdPerDay caps "
        "paid spend"
    )
    assert "add `price: {inputPerMTok: ..., outputPerMTok: ...}`" in message


def test_a_clients_budget_asks_for_prices_too():
    text = PAID.replace("  paidBudgetUsdPerDay: 2.5\n", "") + (
        "clients:\n  - name: ana\n    key: ${ANA_KEY}\n    paidBudgetUsdPerDay: 1\n"
    )
    ((_, path, message),) = issues(text, PAID="true", ANA_KEY="ana-key-0123456789")
    assert path == "chains[0].entries[1]"
    assert "clients[0].paidBudgetUsdPerDay caps paid spend" in message


def test_priced_unpriced_and_unbudgeted_entries_that_load():
    priced = PAID.replace(
        "    paid: ${PAID}\n",
        "    paid: true\n    price: {inputPerMTok: 0.15, outputPerMTok: 0.6}\n",
    )
    entry = build_snapshot(parse(priced)).chains["main"].entries[1]
    assert entry.paid and entry.price is not None
    assert entry.price.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    # Not paid: no price needed. No budget: a paid entry needs none either.
    assert parse(PAID, PAID="false").chains[0].entries[1].price is None
    assert parse(PAID.replace("  paidBudgetUsdPerDay: 2.5\n", ""), PAID="true")


@pytest.mark.parametrize(
    ("value", "wording"),
    [(-1, "must be at least 0"), (".nan", "finite number"), ("true", "an amount of US dollars")],
)
def test_a_budget_is_a_number_of_dollars(value, wording):
    text = PAID.replace("paidBudgetUsdPerDay: 2.5", f"paidBudgetUsdPerDay: {value}")
    found = issues(text, PAID="false")
    assert [path for _, path, _ in found] == ["settings.paidBudgetUsdPerDay"]
    assert wording in found[0][2]
