"""Client keys end to end: the official openai SDK -> chain429 -> fake providers.

Two clients with keys of their own, an anonymous apiKeys caller beside them;
attribution in the answer's header, the request log, /v1/stats/clients and
/metrics; a client's own limits answered with its own 429 before any provider
is asked; the chains a client may use.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from chain429.routing.tokens import prompt_tokens
from fixtures.servers import PROXY_KEY, provider_entry

ADMIN_KEY = "clients-admin-key-0123"
ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef"
HELLO = [{"role": "user", "content": "hi"}]


def config_for(fast, smart, *, alice=None, bob=None, settings=None, aliases=None):
    return {
        **({"aliases": aliases} if aliases else {}),
        "version": 1,
        "settings": {
            "apiKeys": [PROXY_KEY],
            "adminKeys": [ADMIN_KEY],
            "defaultChain": "fast",
            **(settings or {}),
        },
        "providers": [provider_entry("fast", fast), provider_entry("smart", smart)],
        "chains": [
            {"name": "fast", "entries": [{"provider": "fast", "model": "small"}]},
            {"name": "smart", "entries": [{"provider": "smart", "model": "large"}]},
        ],
        "clients": [
            {"name": "alice", "key": ALICE_KEY, **(alice or {})},
            {"name": "bob", "key": BOB_KEY, **(bob or {})},
        ],
    }


@pytest.fixture
def team(fake, proxy, tmp_path):
    """Start a proxy for a config built by `config_for`, with a request log."""

    def start(**kwargs):
        fast, smart = fake("fast"), fake("smart")
        database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
        migrate(database)
        telemetry = Telemetry(database, batch_interval_s=0.01)
        p = proxy(config_for(fast, smart, **kwargs), telemetry=telemetry)
        return p, fast, smart

    return start


def sdk(p, key):
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key=key, max_retries=0)


def chat(client, model="fast", **kwargs):
    return client.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kwargs)


def admin(p):
    return httpx.Client(
        base_url=p.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )


def logged(p, request_id):
    """The request's row, once the writer has it."""
    with admin(p) as http:
        for _ in range(50):
            answer = http.get(f"/v1/stats/requests/{request_id}")
            if answer.status_code == 200:
                return answer.json()
            time.sleep(0.05)
    raise AssertionError(f"{request_id} never reached the request log")


def test_each_client_is_named_in_its_answers_the_log_and_stats(team):
    p, fast, _ = team()
    alice, bob, anonymous = sdk(p, ALICE_KEY), sdk(p, BOB_KEY), sdk(p, PROXY_KEY)
    ids = {}
    for name, client, count in (("alice", alice, 2), ("bob", bob, 1), (None, anonymous, 1)):
        for _ in range(count):
            raw = chat(client)
            assert raw.parse().choices[0].message.content == "Hello from fast"
            assert raw.headers.get("x-429chain-client") == name
            ids[name] = raw.headers["x-request-id"]
    assert logged(p, ids["alice"])["client"] == "alice"
    assert logged(p, ids["alice"])["key_label"] == "client:alice"
    assert logged(p, ids["bob"])["client"] == "bob"
    anonymous_row = logged(p, ids[None])
    assert anonymous_row["client"] is None and anonymous_row["key_label"] == "key#1"

    with admin(p) as http:
        rows = {r["client"]: r for r in http.get("/v1/stats/clients").json()["data"]}
        one = http.get("/v1/stats/clients/alice").json()
        only_bob = http.get("/v1/stats/requests", params={"client": "bob"}).json()["data"]
        no_client = http.get("/v1/stats/requests", params={"client": "-"}).json()["data"]
        metrics = http.get("/metrics").text
    assert {name: row["requests"] for name, row in rows.items()} == {
        "alice": 2,
        "bob": 1,
        None: 1,
    }
    assert rows["alice"]["errors"] == 0 and rows["alice"]["tokens"]["total"] > 0
    assert one["object"] == "stats.client" and one["requests"] == 2
    assert [r["id"] for r in only_bob] == [ids["bob"]]
    assert [r["id"] for r in no_client] == [ids[None]]  # `-`: sent without a client key
    assert 'client="alice",endpoint="chat",outcome="success",provider="fast"} 2.0' in metrics
    assert 'chain429_client_tokens_total{client="bob",kind="prompt"}' in metrics


def test_a_client_over_its_own_limit_gets_its_own_429_and_no_provider_is_asked(team):
    p, fast, _ = team(alice={"requestsPerMinute": 2})
    alice, bob = sdk(p, ALICE_KEY), sdk(p, BOB_KEY)
    chat(alice)
    chat(alice)
    assert len(fast.requests) == 2

    with pytest.raises(openai.RateLimitError) as refused:
        chat(alice)
    error = refused.value
    assert error.status_code == 429
    body = error.body
    assert body["code"] == "client_rate_limited" and body["type"] == "rate_limit_error"
    assert "requestsPerMinute 2" in body["message"] and "alice" in body["message"]
    headers = error.response.headers
    assert 50 <= int(headers["retry-after"]) <= 60
    assert 50_000 <= int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-429chain-client"] == "alice"
    assert "x-429chain-trace" not in headers  # no chain was walked
    assert len(fast.requests) == 2  # the provider never saw it

    # Another client, and the anonymous key, are not held back by alice's limit.
    assert chat(bob).headers["x-429chain-client"] == "bob"
    assert len(fast.requests) == 3
    row = logged(p, headers["x-request-id"])
    assert (row["status"], row["outcome"], row["attempts"]) == (429, "client_rate_limited", 0)
    with admin(p) as http:
        rows = {r["client"]: r for r in http.get("/v1/stats/clients").json()["data"]}
    assert rows["alice"]["rate_limited"] == 1 and rows["alice"]["errors"] == 1


def test_a_client_token_limit_counts_what_the_provider_reported(team):
    # A request reserves its estimate (the prompt's, `estimate` for "hi", + max_tokens)
    # and is settled at the usage the provider reports. The second request below fits
    # in the minute's 200 tokens only if the first was settled at its real count.
    limit, estimate = 200, prompt_tokens(HELLO)
    p, fast, _ = team(alice={"tokensPerMinute": limit})
    alice = sdk(p, ALICE_KEY)
    first = chat(alice, max_tokens=140).parse().usage.total_tokens
    assert first < estimate + 140  # what the fake reports: below the estimate
    second_max = limit - 1 - first - estimate
    assert estimate + 140 + estimate + second_max > limit  # not beside the unsettled one
    second = chat(alice, max_tokens=second_max).parse().usage.total_tokens
    with pytest.raises(openai.RateLimitError) as refused:
        chat(alice, max_tokens=limit - first - second)
    assert f"tokensPerMinute {limit}: {first + second} used" in refused.value.body["message"]
    assert len(fast.requests) == 2
    with admin(p) as http:
        usage = http.get("/v1/admin/clients/alice").json()["usage"]
    assert [(q["kind"], q["window"], q["limit"], q["remaining"]) for q in usage] == [
        ("tokens", "minute", limit, limit - first - second)
    ]


def test_a_client_may_use_only_its_chains(team):
    p, fast, smart = team(alice={"chains": ["fast"]})
    alice, bob = sdk(p, ALICE_KEY), sdk(p, BOB_KEY)
    assert chat(alice, "fast").headers["x-429chain-chain"] == "fast"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(alice, "smart")
    body = refused.value.body
    assert body["code"] == "model_not_allowed" and body["param"] == "model"
    assert "its chains: fast" in body["message"]
    with pytest.raises(openai.PermissionDeniedError):
        chat(alice, "large")  # an entry model outside its chains
    assert chat(alice, "small").headers["x-429chain-route"] == "model"  # one inside them
    assert len(smart.requests) == 0
    assert chat(bob, "smart").headers["x-429chain-chain"] == "smart"

    listed = [m.id for m in alice.models.list()]
    assert listed == ["fast", "small"]
    assert {m.id for m in bob.models.list()} == {"fast", "smart", "small", "large"}


def test_an_alias_to_a_chain_a_client_may_not_use_is_refused_by_its_name(team):
    p, _, smart = team(alice={"chains": ["fast"]}, aliases={"gpt-4": "smart", "mini": "fast"})
    alice = sdk(p, ALICE_KEY)
    assert chat(alice, "mini").headers["x-429chain-alias"] == "mini"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(alice, "gpt-4")
    message = refused.value.body["message"]
    assert "the alias 'gpt-4' names the chain 'smart', which it may not use" in message
    assert "its chains: fast" in message and smart.requests == []


def test_client_keys_do_not_open_admin_routes_and_unknown_keys_are_refused(team):
    p, fast, _ = team()
    with httpx.Client(base_url=p.url, timeout=10) as http:
        as_alice = {"authorization": f"Bearer {ALICE_KEY}"}
        refused = http.get("/v1/stats/clients", headers=as_alice)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_permissions"
        assert http.get("/v1/admin/config", headers=as_alice).status_code == 403
        assert http.get("/v1/ratelimits", headers=as_alice).status_code == 200
        wrong = http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {ALICE_KEY}x"},
            json={"model": "fast", "messages": HELLO},
        )
        assert wrong.status_code == 401 and "x-429chain-client" not in wrong.headers
    assert len(fast.requests) == 0


def test_streams_carry_the_client_header_and_count_against_its_limits(team):
    p, fast, _ = team(alice={"requestsPerMinute": 1})
    alice = sdk(p, ALICE_KEY)
    with alice.chat.completions.with_streaming_response.create(
        model="fast", messages=HELLO, stream=True
    ) as response:
        assert response.headers["x-429chain-client"] == "alice"
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    assert text == "Hello from fast"
    with pytest.raises(openai.RateLimitError):
        alice.chat.completions.create(model="fast", messages=HELLO, stream=True)
    assert len(fast.requests) == 1


def test_only_clients_still_guard_the_proxy(fake, proxy):
    fast, smart = fake("fast"), fake("smart")
    config = config_for(fast, smart)
    config["settings"] = {"defaultChain": "fast"}  # no apiKeys, no adminKeys
    p = proxy(config)
    with httpx.Client(base_url=p.url, timeout=10) as http:
        anonymous = http.post("/v1/chat/completions", json={"model": "fast", "messages": HELLO})
        assert anonymous.status_code == 401
        assert http.get("/v1/admin/config").status_code == 401
    assert chat(sdk(p, ALICE_KEY)).headers["x-429chain-client"] == "alice"


def test_two_instances_share_a_clients_limit_through_redis(fake, proxy, redis_ns):
    from fixtures.redis import REDIS_URL

    fast, smart = fake("fast"), fake("smart")
    config = config_for(
        fast,
        smart,
        alice={"requestsPerMinute": 3},
        settings={"stateStore": REDIS_URL, "stateNamespace": redis_ns},
    )
    one, two = proxy(config), proxy(config)
    on_one, on_two = sdk(one, ALICE_KEY), sdk(two, ALICE_KEY)
    chat(on_one)
    chat(on_two)
    chat(on_one)
    for instance in (on_two, on_one):
        with pytest.raises(openai.RateLimitError) as refused:
            chat(instance)
        assert refused.value.body["code"] == "client_rate_limited"
    assert len(fast.requests) == 3
    assert chat(sdk(two, BOB_KEY)).headers["x-429chain-client"] == "bob"


def test_every_error_to_a_client_names_it(team):
    from chain429.fakes.provider import Reply

    p, fast, _ = team()
    fast.always(Reply.rate_limited(retry_after="30"))
    alice = sdk(p, ALICE_KEY)
    with pytest.raises(openai.InternalServerError) as exhausted:
        chat(alice)
    assert exhausted.value.status_code == 503
    assert exhausted.value.body["code"] == "all_providers_exhausted"
    assert exhausted.value.response.headers["x-429chain-client"] == "alice"
    bad = httpx.post(
        f"{p.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {ALICE_KEY}"},
        json={"model": "fast", "messages": []},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.headers["x-429chain-client"] == "alice"
    assert logged(p, bad.headers["x-request-id"])["client"] == "alice"
