from __future__ import annotations

import textwrap
from pathlib import Path

import platformdirs
import pydantic
import pytest

from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.loader import find_config_path, load_config, parse_config_text, read_dotenv
from chain429.config.model import Chain, ChainEntry, Config, Provider, Retry, Settings
from chain429.routing.runtime import build_snapshot

COMPAT_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "429chain.yaml"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

MINIMAL = """\
version: 1
providers:
  - id: groq
    type: groq
    apiKey: gsk-test
chains:
  - name: default
    entries:
      - provider: groq
        model: llama-3.1-8b-instant
"""


def parse(text: str, **env: str) -> Config:
    return parse_config_text(textwrap.dedent(text), filename="c.yaml", environ=env)


def issues(text: str, **env: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text, **env)
    assert all(i.file == "c.yaml" for i in info.value.issues)
    return [(i.line, i.path, i.message) for i in info.value.issues]


# --- 429chain compatibility -------------------------------------------------


def test_a_429chain_config_loads_unchanged() -> None:
    """Every key of 429chain's schema, in a file of our own (tests/fixtures)."""
    config = load_config(COMPAT_CONFIG, environ={})
    assert len(config.providers) == 7
    assert [c.name for c in config.chains] == ["default", "fast"]
    assert config.settings.default_chain == "default"
    assert config.settings.api_keys == ("your-proxy-api-key-here", "a-second-client-key")
    assert config.settings.db_path == "./429chain.db"
    groq = config.provider("groq")
    assert groq.timeout == 10000
    assert groq.rate_limits is not None
    assert groq.rate_limits.requests_per_minute == 30
    assert groq.rate_limits.concurrent_requests == 4
    assert groq.display_name == "Groq"
    assert config.provider("moonshot").resolved_base_url == "https://api.moonshot.ai/v1"
    default = config.chain("default")
    assert default is not None
    assert [e.provider for e in default.entries][:2] == ["openrouter", "groq"]
    assert {c.kind for c in config.chains} == {"chat"}  # 429chain's chains are chat chains


def test_a_chain_kind_is_chat_or_embeddings() -> None:
    got = issues(
        """        version: 1
        providers:
          - id: m
            type: mistral
            apiKey: k
        chains:
          - name: embed
            kind: embeddings
            entries:
              - provider: m
                model: mistral-embed
          - name: odd
            kind: vectors
            entries:
              - provider: m
                model: x
        """
    )
    assert [(line, path) for line, path, _ in got] == [(13, "chains[1].kind")]
    assert "'chat'" in got[0][2] and "'embeddings'" in got[0][2]


# --- values and defaults ----------------------------------------------------


def test_defaults() -> None:
    config = parse(MINIMAL)
    s = config.settings
    assert (s.port, s.host, s.log_level) == (3429, "127.0.0.1", "info")
    assert (s.api_keys, s.admin_keys, s.default_chain) == ((), (), None)
    assert (s.cooldown_default_ms, s.request_timeout_ms, s.connect_timeout_ms) == (
        60000,
        30000,
        5000,
    )
    assert (s.payment_cooldown_ms, s.unhealthy_cooldown_ms) == (300000, 600000)
    assert (s.stream_idle_timeout_ms, s.first_token_timeout_ms) == (20000, 10000)
    # Failover: the plain waterfall (no retries, no waits), a breaker after 3 failures.
    assert (s.retry.attempts, s.retry.short_wait_ms, s.max_attempts_per_request) == (0, 0, None)
    assert (s.breaker.failures, s.breaker.base_ms, s.breaker.max_ms) == (3, 5000, 60000)
    assert (s.mid_stream_failure_threshold, s.mid_stream_cooldown_ms) == (3, 120000)
    assert s.mid_stream_cooldown_max_ms == 1800000
    assert (s.queue_mode, s.queue_max_wait_ms, s.queue_max_size) == (False, 300000, 100)
    assert s.max_body_bytes == 10 * 1024 * 1024
    assert (s.max_upstream_body_bytes, s.max_sse_event_bytes) == (32 * 1024 * 1024, 8 * 1024 * 1024)
    assert s.stream_max_duration_ms == 30 * 60 * 1000
    assert not (s.normalize_responses or s.strict_models or s.access_log)
    groq = config.provider("groq")
    assert groq.display_name == "groq"
    assert groq.resolved_base_url == "https://api.groq.com/openai/v1"
    assert (groq.headers, groq.paid, groq.timeout, groq.rate_limits) == ({}, False, None, None)
    assert Config() == Config(version=1, settings=Settings(), providers=(), chains=())


def test_every_camel_case_key_is_read(tmp_path: Path) -> None:
    env = {"PROXY_KEY": "pk", "GROQ_API_KEY": "gk"}
    config = load_config(FIXTURES / "full.yaml", environ=env)
    s = config.settings
    assert (s.port, s.host, s.api_keys, s.admin_keys) == (8080, "0.0.0.0", ("pk",), ("admin-dev",))
    assert (s.default_chain, s.log_level) == ("fast", "debug")
    assert [
        s.cooldown_default_ms,
        s.request_timeout_ms,
        s.connect_timeout_ms,
        s.payment_cooldown_ms,
        s.unhealthy_cooldown_ms,
        s.max_body_bytes,
        s.stream_idle_timeout_ms,
        s.first_token_timeout_ms,
        s.mid_stream_failure_threshold,
        s.mid_stream_cooldown_ms,
        s.mid_stream_cooldown_max_ms,
        s.queue_max_wait_ms,
        s.queue_max_size,
    ] == [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9, 10000, 11000, 12000, 13]
    assert (s.max_upstream_body_bytes, s.max_sse_event_bytes, s.stream_max_duration_ms) == (
        14000,
        15000,
        16000,
    )
    assert s.normalize_responses and s.strict_models and s.access_log and s.queue_mode
    assert (s.db_path, s.database_url) == ("./data/chain429.db", None)
    local = config.provider("local")
    assert local.resolved_base_url == "http://localhost:11434/v1"
    assert local.headers == {"Authorization": "Bearer none"}
    assert local.paid
    limits = config.provider("groq").rate_limits
    assert limits is not None
    assert (limits.requests_per_day, limits.tokens_per_day, limits.concurrent_requests) == (
        14400,
        500000,
        2,
    )
    entry = config.chains[0].entries[0]
    assert entry.rate_limits is not None and entry.rate_limits.requests_per_minute == 10
    assert (entry.paid, entry.supports_prefill) == (False, True)
    assert config.chains[0].entries[1].paid is None
    assert (s.retry.attempts, s.retry.short_wait_ms, s.max_attempts_per_request) == (1, 3000, 17)
    assert (s.breaker.failures, s.breaker.base_ms, s.breaker.max_ms) == (4, 18000, 19000)
    assert config.provider("groq").retry == Retry(attempts=2)
    assert entry.retry == Retry(short_wait_ms=500)
    assert config.aliases == {"gpt-4o-mini": "fast"}


def test_retry_is_inherited_key_by_key() -> None:
    """An entry's `retry` overrides its provider's, which overrides `settings.retry`, one
    key at a time: what the entry leaves out comes from the level above."""
    env = {"PROXY_KEY": "pk", "GROQ_API_KEY": "gk"}
    snapshot = build_snapshot(load_config(FIXTURES / "full.yaml", environ=env))
    groq, local = snapshot.chains["fast"].entries
    # groq: attempts from the provider (2), shortWaitMs from the entry (500 ms).
    assert (groq.retry_attempts, groq.short_wait_s) == (2, 0.5)
    # local: nothing of its own: settings.retry.
    assert (local.retry_attempts, local.short_wait_s) == (1, 3.0)
    assert snapshot.policy.breaker_open_s(3) is None
    assert [snapshot.policy.breaker_open_s(n) for n in (4, 5)] == [18.0, 19.0]


@pytest.mark.parametrize(
    "retry", [{"attempts": 4}, {"attempts": -1}, {"shortWaitMs": 60001}, {"attempts": True}]
)
def test_retry_out_of_bounds_is_refused(retry: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Config.model_validate({"version": 1, "settings": {"retry": retry}})


def test_models_are_frozen_and_use_tuples() -> None:
    config = parse(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        config.settings.port = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.providers[0].api_key = "stolen"  # type: ignore[misc]
    assert isinstance(config.providers, tuple)
    assert isinstance(config.chains[0].entries, tuple)


def test_lookup_helpers() -> None:
    config = parse(MINIMAL)
    assert config.provider("groq").type == "groq"
    with pytest.raises(KeyError):
        config.provider("nope")
    assert config.chain("default") is config.chains[0]
    assert config.chain("nope") is None


def test_commented_out_sections_mean_empty() -> None:
    config = parse("version: 1\nsettings:\n  apiKeys:\nproviders:\nchains:\n")
    assert (config.providers, config.chains, config.settings.api_keys) == ((), (), ())


def test_models_built_in_code_are_checked_too() -> None:
    entry = ChainEntry(provider="missing", model="m")
    with pytest.raises(pydantic.ValidationError, match=r"chains\[0\]\.entries\[0\]\.provider"):
        Config(chains=(Chain(name="c", entries=(entry,)),))
    with pytest.raises(pydantic.ValidationError, match="required when type is generic-openai"):
        Provider(id="x", type="generic-openai")


# --- environment variables --------------------------------------------------


def test_env_substitution_everywhere_in_strings() -> None:
    config = parse(
        """\
        version: 1
        settings:
          port: ${PORT_NUMBER}
          apiKeys: ["${A}", "pre-${A}-post", "$${LITERAL}", "${UNSET:-fallback}", "${EMPTY:-d}"]
        providers:
          - id: p
            type: generic-openai
            baseUrl: ${BASE:-http://localhost:8000/v1}
            headers: {Authorization: "Bearer ${A}"}
        """,
        PORT_NUMBER="4000",
        A="secret",
        EMPTY="",
    )
    assert config.settings.port == 4000
    assert config.settings.api_keys == ("secret", "pre-secret-post", "${LITERAL}", "fallback", "d")
    assert config.providers[0].base_url == "http://localhost:8000/v1"
    assert config.providers[0].headers == {"Authorization": "Bearer secret"}


def test_dotenv_next_to_config_and_real_env_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# keys\nexport GROQ_API_KEY='from-dotenv'\nPROXY_KEY=\"proxy\"  \n\nNOTE=a b # comment\n"
    )
    path = tmp_path / "chain429.yaml"
    path.write_text(
        "version: 1\nsettings:\n  apiKeys: ['${PROXY_KEY}', '${NOTE}']\n"
        "providers:\n  - {id: g, type: groq, apiKey: '${GROQ_API_KEY}'}\n"
    )
    config = load_config(path, environ={})
    assert config.provider("g").api_key == "from-dotenv"
    assert config.settings.api_keys == ("proxy", "a b")
    config = load_config(path, environ={"GROQ_API_KEY": "from-env"})
    assert config.provider("g").api_key == "from-env"


def test_read_dotenv_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / ".env") == {}


def test_unset_variable_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL.replace("gsk-test", "${GROQ_API_KEY}"))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == (
        f"{path}:5: providers[0].apiKey: environment variable GROQ_API_KEY is not set"
    )


# --- errors: where and what -------------------------------------------------


def test_yaml_syntax_error_has_line() -> None:
    [(line, path, message)] = issues("version: 1\nsettings:\n  port: [1, 2\n  host: x\n")
    assert path == ""
    assert line == 4
    assert message.startswith("invalid YAML")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "file is empty"),
        ("# only a comment\n", None, "file is empty"),
        ("- a\n- b\n", 1, "the top level must be a mapping"),
        ("just text\n", 1, "the top level must be a mapping"),
    ],
)
def test_empty_or_not_a_mapping(text: str, line: int | None, message: str) -> None:
    [(got_line, path, got)] = issues(text)
    assert (got_line, path) == (line, "")
    assert got.startswith(message)


def test_cyclic_alias_is_reported_not_crashed() -> None:
    assert issues("version: 1\nsettings: &s {apiKeys: [*s]}\n") == [
        (2, "", "an alias may not refer to itself")
    ]


def test_malformed_reference_is_an_error() -> None:
    assert issues("version: 1\nsettings:\n  apiKeys: ['${GROQ_KEY']\n") == [
        (3, "settings.apiKeys[0]", "malformed ${...} reference (write $${ for a literal ${)")
    ]


def test_a_file_says_which_schema_it_is() -> None:
    """`{}` or a stray YAML mapping is not a config that happens to be empty."""
    assert issues("{}") == [(1, "", "missing required key 'version' (write version: 1)")]
    assert issues("foo: 1\n")[0] == (1, "", "missing required key 'version' (write version: 1)")


def test_sections_of_the_wrong_shape() -> None:
    assert issues("version: 1\nsettings: 5\nproviders: {a: 1}\nchains: [x]\n") == [
        (2, "settings", "expected a mapping (got 5)"),
        (3, "providers", "expected a list (got a mapping)"),
        (4, "chains[0]", "expected a mapping (got 'x')"),
    ]


def test_unknown_key_with_suggestion() -> None:
    assert issues("version: 1\nsettings:\n  port: 1\n  apikeys: [a]\n  foo: 2\n") == [
        (4, "settings.apikeys", "unknown key 'apikeys' (did you mean 'apiKeys'?)"),
        (5, "settings.foo", "unknown key 'foo'"),
    ]


def test_wrong_types_and_bounds() -> None:
    got = issues(
        """\
        version: 1
        settings:
          port: 70000
          logLevel: loud
          normalizeResponses: maybe
        providers:
          - id: g
            type: groq
            apiKey: 12345
            timeout: soon
        """
    )
    assert [(line, path) for line, path, _ in got] == [
        (3, "settings.port"),
        (4, "settings.logLevel"),
        (5, "settings.normalizeResponses"),
        (9, "providers[0].apiKey"),
        (10, "providers[0].timeout"),
    ]
    messages = [m for _, _, m in got]
    assert messages[0] == "must be at most 65535 (got 70000)"
    assert "'trace'" in messages[1] and "'fatal'" in messages[1]
    assert messages[2].startswith("expected true or false")
    assert messages[3] == "expected a string (got a int)"  # the secret is not echoed
    assert messages[4] == "expected a whole number (got 'soon')"


def test_missing_required_field_points_at_parent() -> None:
    text = MINIMAL + "      - provider: groq\n      - model: m\n"
    assert issues(text) == [
        (11, "chains[0].entries[1].model", "missing required key 'model'"),
        (12, "chains[0].entries[2].provider", "missing required key 'provider'"),
    ]


def test_unknown_provider_type_lists_valid_types() -> None:
    [(line, path, message)] = issues(MINIMAL.replace("type: groq", "type: grok"))
    assert (line, path) == (4, "providers[0].type")
    assert "unknown provider type 'grok'" in message
    assert "groq" in message and "generic-openai" in message


def test_a_provider_id_has_no_slash() -> None:
    # `groq/llama-3` names an entry, split at the first slash (traces, `entry pause`).
    text = MINIMAL.replace("id: groq", "id: my/groq").replace("provider: groq", "provider: my/groq")
    assert issues(text) == [
        (3, "providers[0].id", "'my/groq' contains '/': entries are named <id>/<model>")
    ]


def test_generic_openai_requires_base_url() -> None:
    text = MINIMAL.replace("type: groq", "type: generic-openai")
    assert issues(text) == [
        (3, "providers[0].baseUrl", "required when type is generic-openai (it has no default URL)")
    ]
    config = parse(
        text.replace("type: generic-openai", "type: generic-openai\n    baseUrl: http://h/v1/")
    )
    assert config.providers[0].resolved_base_url == "http://h/v1"


def test_cross_field_errors() -> None:
    got = issues(
        """\
        version: 1
        settings:
          defaultChain: defualt
        providers:
          - {id: a, type: groq}
          - {id: b, type: groq}
          - {id: a, type: openai}
        chains:
          - name: default
            entries:
              - {provider: a, model: m}
              - {provider: c, model: m}
          - name: default
            entries: [{provider: b, model: m}]
        """
    )
    assert got == [
        (3, "settings.defaultChain", "no chain named 'defualt'; did you mean 'default'?"),
        (7, "providers[2].id", "duplicate provider id 'a' (already used by providers[0])"),
        (12, "chains[0].entries[1].provider", "no provider with id 'c'; providers: a, b"),
        (13, "chains[1].name", "duplicate chain name 'default' (already used by chains[0])"),
    ]


def test_all_errors_are_collected_in_one_pass() -> None:
    got = issues(
        """\
        version: 2
        settings:
          port: 0
          port: 1
        providers:
          - id: ""
            type: groq
            apiKey: ${MISSING}
        chains:
          - name: c
            entries: []
          - name: d
            entries:
              - {provider: nope, model: m}
        """
    )
    assert [(line, path) for line, path, _ in got] == [
        (1, "version"),
        (4, "settings.port"),
        (6, "providers[0].id"),
        (8, "providers[0].apiKey"),
        (11, "chains[0].entries"),
        (14, "chains[1].entries[0].provider"),
    ]
    assert got[1][2] == "duplicate key 'port' (first on line 3)"
    assert got[2][2] == got[4][2] == "must not be empty"


def test_issue_and_error_formatting() -> None:
    assert str(ConfigIssue("c.yaml", 3, "settings.port", "bad")) == "c.yaml:3: settings.port: bad"
    assert str(ConfigIssue("c.yaml", None, "", "file not found")) == "c.yaml: file not found"
    assert str(ConfigIssue(None, 3, "x", "bad")) == "line 3: x: bad"
    err = ConfigError([ConfigIssue("a", 1, "p", "m1"), ConfigIssue("a", 2, "q", "m2")])
    assert str(err) == "a:1: p: m1\na:2: q: m2"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    [issue] = info.value.issues
    assert (issue.file, issue.message) == (str(tmp_path / "nope.yaml"), "file not found")


# --- finding the file -------------------------------------------------------


def test_find_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CHAIN429_CONFIG": "/a.yaml", "CONFIG_PATH": "/b.yaml"}
    assert find_config_path("/x.yaml", env) == Path("/x.yaml")
    assert find_config_path(None, env) == Path("/a.yaml")
    assert find_config_path(None, {"CONFIG_PATH": "/b.yaml"}) == Path("/b.yaml")
    user = platformdirs.user_config_path("chain429") / "chain429.yaml"
    assert find_config_path(None, {}) == user
    (tmp_path / "chain429.yaml").write_text(MINIMAL)
    assert find_config_path(None, {}) == tmp_path / "chain429.yaml"


def test_aliases_name_chains_and_are_not_chain_names() -> None:
    config = parse(MINIMAL + "aliases:\n  gpt-4o-mini: default\n  openai/gpt-4o: default\n")
    assert config.aliases == {"gpt-4o-mini": "default", "openai/gpt-4o": "default"}
    assert parse(MINIMAL).aliases == {}  # 429chain's files have none
    assert parse(MINIMAL + "aliases:\n").aliases == {}  # every line commented out
    assert issues(MINIMAL + "aliases:\n  gpt-4o-mini: defualt\n  default: default\n  x: ''\n") == [
        (12, "aliases.gpt-4o-mini", "no chain named 'defualt'; did you mean 'default'?"),
        (
            13,
            "aliases.default",
            "'default' is a chain's name: a request naming it gets that chain, so the alias "
            "would never be used; remove it, or rename the chain",
        ),
        (14, "aliases.x", "must not be empty"),
    ]
    assert issues(MINIMAL + "aliases: [gpt-4o-mini]\n") == [
        (11, "aliases", "expected a mapping (got a list)")
    ]
