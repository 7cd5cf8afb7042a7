from __future__ import annotations

import json
from typing import Any

import pytest

from chain429.config.diff import (
    ChainChange,
    ConfigDiff,
    EntryMove,
    FieldChange,
    ProviderChange,
    diff_configs,
    mask_secret,
    unified_diff,
)
from chain429.config.model import Config

GROQ_KEY = "gsk_live_AAAAAAAAAAAAAAAA_1111"
GROQ_KEY_2 = "gsk_live_BBBBBBBBBBBBBBBB_2222"
OR_KEY = "sk-or-v1-0123456789abcdef"
MISTRAL_KEY = "mistral-literal-key-9876"
CLIENT_KEY = "sk-client-secret-55555"
ADMIN_KEY = "admin-secret-key-77777"
BEARER = "Bearer hdr-token-secret-4321"
DB_PASSWORD = "pg-pass-s3cr3t"


def provider(id: str, type: str | None = None, **fields: Any) -> dict[str, Any]:
    keys = {"groq": GROQ_KEY, "openrouter": OR_KEY, "mistral": MISTRAL_KEY}
    type = type or id
    return {"id": id, "type": type, "apiKey": keys.get(type, "x"), **fields}


def entries(*labels: str) -> list[dict[str, Any]]:
    return [dict(zip(("provider", "model"), label.split("/", 1), strict=True)) for label in labels]


def config(
    providers: list[dict[str, Any]] | None = None,
    chains: dict[str, list[dict[str, Any]]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Config:
    if providers is None:
        providers = [provider("groq"), provider("openrouter")]
    if chains is None:
        chains = {"fast": entries("groq/a", "groq/b", "openrouter/c")}
    return Config.model_validate(
        {
            "version": 1,
            "settings": settings or {},
            "providers": providers,
            "chains": [{"name": name, "entries": e} for name, e in chains.items()],
        }
    )


def chain_moves(old: list[str], new: list[str]) -> ChainChange:
    diff = diff_configs(config(chains={"c": entries(*old)}), config(chains={"c": entries(*new)}))
    assert len(diff.chains_changed) == 1
    return diff.chains_changed[0]


# ---------------------------------------------------------------- mask_secret


def test_mask_secret() -> None:
    assert mask_secret(None) is None
    assert mask_secret("${GROQ_API_KEY}") == "${GROQ_API_KEY}"
    assert mask_secret("Bearer ${TOKEN}") == "Bearer ${TOKEN}"
    assert mask_secret("gsk_0123456789abcdef") == "gsk…cdef"
    assert mask_secret("abcdefgh12") == "…gh12"
    assert mask_secret("short") == "…"  # too short to show any of it
    assert mask_secret("") == ""


# ---------------------------------------------------------------- identical


def test_identical_configs_are_empty() -> None:
    a, b = config(), config()
    diff = diff_configs(a, b)
    assert diff.empty
    assert diff == ConfigDiff()
    assert diff.summary_lines() == []
    assert diff.to_dict()["empty"] is True
    assert unified_diff(a, b) == ""


def test_settings_default_vs_explicit_default() -> None:
    a = config()
    b = config(settings={"cooldownDefaultMs": 60000, "port": 3429, "apiKeys": []})
    assert diff_configs(a, b).empty
    assert unified_diff(a, b) == ""


def test_entry_rate_limits_null_equals_unset() -> None:
    a = config(chains={"c": [{"provider": "groq", "model": "a"}]})
    b = config(chains={"c": [{"provider": "groq", "model": "a", "rateLimits": {}}]})
    assert diff_configs(a, b).empty


# ---------------------------------------------------------------- providers


def test_providers_added_removed_changed() -> None:
    a = config([provider("groq", timeout=10000), provider("openrouter")], chains={})
    b = config(
        [
            provider("groq", timeout=5000, rateLimits={"requestsPerMinute": 30}),
            provider("mistral"),
        ],
        chains={},
    )
    diff = diff_configs(a, b)
    assert diff.providers_added == ("mistral",)
    assert diff.providers_removed == ("openrouter",)
    assert diff.providers_changed == (
        ProviderChange(
            "groq",
            (
                FieldChange("rateLimits.requestsPerMinute", None, 30),
                FieldChange("timeout", 10000, 5000),
            ),
        ),
    )
    assert diff.summary_lines() == [
        "+ provider mistral",
        "- provider openrouter",
        "~ provider groq: rateLimits.requestsPerMinute (unset) -> 30",
        "~ provider groq: timeout 10000 -> 5000",
    ]


def test_provider_headers_and_flags() -> None:
    a = config([provider("groq", headers={"X-Title": "old"})], chains={})
    b = config([provider("groq", headers={"X-Title": "new"}, paid=True)], chains={})
    (change,) = diff_configs(a, b).providers_changed
    assert change.changes == (
        FieldChange("headers.X-Title", "old", "new"),
        FieldChange("paid", False, True),
    )


# ---------------------------------------------------------------- chains


def test_chains_added_and_removed() -> None:
    a = config(chains={"fast": entries("groq/a"), "old": entries("groq/a")})
    b = config(chains={"fast": entries("groq/a"), "new": entries("openrouter/c")})
    diff = diff_configs(a, b)
    assert (diff.chains_added, diff.chains_removed, diff.chains_changed) == (("new",), ("old",), ())
    assert diff.summary_lines() == ["+ chain new", "- chain old"]


def test_a_chain_kind_change_is_a_change() -> None:
    a = config(chains={"vectors": entries("groq/a")})
    data = a.model_dump(by_alias=True)
    data["chains"][0]["kind"] = "embeddings"
    diff = diff_configs(a, Config.model_validate(data))
    assert diff.summary_lines() == ["~ chain vectors: kind chat -> embeddings"]


def test_entries_added_and_removed() -> None:
    change = chain_moves(["groq/a", "groq/b"], ["groq/a", "openrouter/c"])
    assert change == ChainChange("c", ("openrouter/c",), ("groq/b",), (), ())


def test_swap_reports_one_move() -> None:
    change = chain_moves(["groq/a", "groq/b"], ["groq/b", "groq/a"])
    assert change.moved == (EntryMove("groq", "b", 2, 1),)
    assert (change.added, change.removed) == ((), ())


def test_move_to_top_reports_only_that_entry() -> None:
    change = chain_moves(
        ["groq/a", "groq/b", "groq/c", "groq/d"], ["groq/d", "groq/a", "groq/b", "groq/c"]
    )
    assert change.moved == (EntryMove("groq", "d", 4, 1),)


def test_move_to_bottom_reports_only_that_entry() -> None:
    change = chain_moves(["groq/a", "groq/b", "groq/c"], ["groq/b", "groq/c", "groq/a"])
    assert change.moved == (EntryMove("groq", "a", 1, 3),)


def test_insert_at_top_is_only_an_addition() -> None:
    change = chain_moves(["groq/a", "groq/b"], ["openrouter/x", "groq/a", "groq/b"])
    assert change == ChainChange("c", ("openrouter/x",), (), (), ())


def test_remove_at_top_is_only_a_removal() -> None:
    change = chain_moves(["groq/a", "groq/b", "groq/c"], ["groq/b", "groq/c"])
    assert change == ChainChange("c", (), ("groq/a",), (), ())


def test_move_summary_line() -> None:
    a = config(chains={"fast": entries("groq/llama-70b", "groq/llama-3.1-8b-instant")})
    b = config(chains={"fast": entries("groq/llama-3.1-8b-instant", "groq/llama-70b")})
    assert diff_configs(a, b).summary_lines() == [
        "~ chain fast: groq/llama-3.1-8b-instant moved 2 -> 1"
    ]


def test_repeated_entries_keep_their_identity() -> None:
    change = chain_moves(["groq/a", "groq/b", "groq/a"], ["groq/a", "groq/b"])
    assert change == ChainChange("c", (), ("groq/a#2",), (), ())


def test_entry_field_changes() -> None:
    a = config(chains={"c": [{"provider": "groq", "model": "llama"}]})
    b = config(
        chains={
            "c": [
                {"provider": "groq", "model": "llama", "rateLimits": {"requestsPerMinute": 5}},
            ]
        }
    )
    (change,) = diff_configs(a, b).chains_changed
    assert change.changed == (FieldChange("groq/llama.rateLimits.requestsPerMinute", None, 5),)
    assert diff_configs(a, b).summary_lines() == [
        "~ chain c: groq/llama.rateLimits.requestsPerMinute (unset) -> 5"
    ]


# ---------------------------------------------------------------- settings


def test_settings_changed() -> None:
    a = config()
    b = config(settings={"cooldownDefaultMs": 30000, "logLevel": "debug"})
    diff = diff_configs(a, b)
    assert diff.settings_changed == (
        FieldChange("cooldownDefaultMs", 60000, 30000),
        FieldChange("logLevel", "info", "debug"),
    )
    assert diff.summary_lines() == [
        "~ settings: cooldownDefaultMs 60000 -> 30000",
        "~ settings: logLevel info -> debug",
    ]


# ---------------------------------------------------------------- secrets

SECRETS = [GROQ_KEY, GROQ_KEY_2, OR_KEY, MISTRAL_KEY, CLIENT_KEY, ADMIN_KEY, BEARER, DB_PASSWORD]


def secret_pair() -> tuple[Config, Config]:
    a = config(
        [provider("groq"), provider("openrouter")],
        settings={"apiKeys": [CLIENT_KEY], "databaseUrl": f"postgresql://u:{DB_PASSWORD}@h/db"},
    )
    b = config(
        [
            provider("groq", apiKey=GROQ_KEY_2, headers={"Authorization": BEARER}),
            provider("mistral"),
            provider("openrouter"),
        ],
        settings={
            "apiKeys": [CLIENT_KEY, "sk-other-client-00000"],
            "adminKeys": [ADMIN_KEY],
            "databaseUrl": "postgresql://u:other-password@h/db",
        },
    )
    return a, b


def all_outputs(a: Config, b: Config) -> str:
    diff = diff_configs(a, b)
    return "\n".join(
        [
            json.dumps(diff.to_dict(), ensure_ascii=False),
            *diff.summary_lines(),
            unified_diff(a, b),
            unified_diff(b, a),
        ]
    )


def test_secrets_never_appear() -> None:
    a, b = secret_pair()
    text = all_outputs(a, b)
    for secret in SECRETS:
        assert secret not in text
    assert "gsk…1111 -> gsk…2222" in text
    assert "Authorization" in text


def test_secret_changes_are_masked_field_changes() -> None:
    a, b = secret_pair()
    diff = diff_configs(a, b)
    (groq,) = diff.providers_changed
    assert groq.changes[0] == FieldChange("apiKey", "gsk…1111", "gsk…2222", secret=True)
    assert groq.changes[1] == FieldChange("headers.Authorization", None, "Bea…4321", secret=True)
    settings = {c.path: c for c in diff.settings_changed}
    assert settings["adminKeys"] == FieldChange("adminKeys", (), ("adm…7777",), secret=True)
    assert settings["apiKeys"].new == ("sk-…5555", "sk-…0000")
    assert settings["databaseUrl"].describe() == "databaseUrl (changed)"


def test_secret_with_same_mask_says_changed() -> None:
    a = config([provider("groq", apiKey="gsk_AAAA_one_1234")], chains={})
    b = config([provider("groq", apiKey="gsk_BBBB_two_1234")], chains={})
    diff = diff_configs(a, b)
    assert diff.summary_lines() == ["~ provider groq: apiKey (changed)"]
    change = diff.to_dict()["providers"]["changed"][0]["changes"][0]
    assert change == {"path": "apiKey", "old": "gsk…1234", "new": "gsk…1234", "secret": True}
    text = unified_diff(a, b)
    assert "-  apiKey: gsk…1234\n+  apiKey: gsk…1234 (changed)\n" in text
    assert "gsk_AAAA_one_1234" not in text and "gsk_BBBB_two_1234" not in text


def test_env_reference_shown_as_is() -> None:
    a = config([provider("groq", apiKey="${GROQ_API_KEY}")], chains={})
    b = config([provider("groq", apiKey="${GROQ_KEY}")], chains={})
    assert diff_configs(a, b).summary_lines() == [
        "~ provider groq: apiKey ${GROQ_API_KEY} -> ${GROQ_KEY}"
    ]


# ---------------------------------------------------------------- output


def test_unified_diff_normalized_yaml() -> None:
    a = config([provider("groq", timeout=10000)], chains={"fast": entries("groq/a")})
    b = config([provider("groq", timeout=5000)], chains={"fast": entries("groq/a")})
    assert unified_diff(a, b, old_name="a.yaml", new_name="b.yaml") == (
        "--- a.yaml\n"
        "+++ b.yaml\n"
        "@@ -2,7 +2,7 @@\n"
        " - id: groq\n"
        "   type: groq\n"
        "   apiKey: gsk…1111\n"
        "-  timeout: 10000\n"
        "+  timeout: 5000\n"
        " chains:\n"
        " - name: fast\n"
        "   entries:\n"
    )


def test_unified_diff_header_order_is_stable() -> None:
    a = config([provider("groq", headers={"A": "1", "B": "2"})], chains={})
    b = config([provider("groq", headers={"B": "2", "A": "1"})], chains={})
    assert diff_configs(a, b).empty
    assert unified_diff(a, b) == ""


@pytest.mark.parametrize("reverse", [False, True])
def test_output_order_is_deterministic(reverse: bool) -> None:
    def order(items: list[Any]) -> list[Any]:
        return items[::-1] if reverse else items

    a = config(
        order([provider("groq", timeout=1), provider("openrouter", timeout=1)]),
        chains=dict(order([("x", entries("groq/a")), ("y", entries("groq/a"))])),
    )
    b = config(
        order(
            [
                provider("groq", timeout=2),
                provider("openrouter", timeout=2),
                provider("mistral"),
                provider("zz", "groq"),
            ]
        ),
        chains=dict(
            order([("x", entries("groq/b")), ("y", entries("groq/b")), ("z", entries("groq/a"))])
        ),
    )
    diff = diff_configs(a, b)
    assert diff.providers_added == ("mistral", "zz")
    assert [p.id for p in diff.providers_changed] == ["groq", "openrouter"]
    assert [c.name for c in diff.chains_changed] == ["x", "y"]
    assert diff.summary_lines() == diff_configs(a, b).summary_lines()
    assert diff.to_dict() == json.loads(json.dumps(diff.to_dict()))


def test_aliases_added_removed_and_pointed_elsewhere() -> None:
    chains = {"fast": entries("groq/a"), "smart": entries("groq/b")}

    def aliased(aliases: dict[str, str]) -> Config:
        base = config(chains=chains).model_dump(by_alias=True)
        return Config.model_validate({**base, "aliases": aliases})

    old = aliased({"gpt-4o-mini": "fast", "claude-3-haiku": "fast"})
    new = aliased({"gpt-4o-mini": "smart", "openai/gpt-4o": "smart"})
    diff = diff_configs(old, new)
    assert not diff.empty
    assert diff.summary_lines() == [
        "- alias claude-3-haiku (was -> fast)",
        "~ alias gpt-4o-mini: fast -> smart",
        "+ alias openai/gpt-4o -> smart",
    ]
    assert diff.to_dict()["aliases"]["changed"][1] == {
        "path": "gpt-4o-mini",
        "old": "fast",
        "new": "smart",
    }
    assert diff_configs(old, old).empty
    assert "+  gpt-4o-mini: smart" in unified_diff(old, new)
