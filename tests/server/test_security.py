"""Hardening, tested the way each hole was found: from outside, over HTTP.

docs/security.md states what these guarantee. Each test names the attack it
replays: an admin edit that would send a provider key elsewhere, a web page
reaching a keyless server on 127.0.0.1 (cross-site POSTs, DNS rebinding), a
submitted config that reads the server's environment, an edit that would open
the server or wipe the file, and inputs that used to end in a 500.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain429.config.loader import load_config
from chain429.requestlog.database import open_database
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import ADMIN, HELLO, PROXY

JSON_TYPE = {"content-type": "application/json"}
YAML_TYPE = {"content-type": "application/yaml"}
PROVIDER_KEY = "sk-live-provider-secret-7777"

KEYED = """\
version: 1
settings:
  apiKeys: [proxy-key]
{admin}  defaultChain: main
providers:
  - id: a
    type: generic-openai
    baseUrl: {a}
    apiKey: ${{A_API_KEY}}
    headers:
      X-Api-Token: literal-header-secret-1234
  - id: b
    type: generic-openai
    baseUrl: {b}
    apiKey: {literal}
chains:
  - name: main
    entries:
      - provider: a
        model: model-a
      - provider: b
        model: model-b
"""

KEYLESS = """\
version: 1
settings:
  defaultChain: main
providers:
  - id: a
    type: generic-openai
    baseUrl: {a}
    apiKey: ${{A_API_KEY}}
chains:
  - name: main
    entries:
      - provider: a
        model: model-a
"""


class Server:
    def __init__(self, path: Path, server: ServerThread) -> None:
        self.path, self.server = path, server

    @property
    def url(self) -> str:
        return self.server.url

    def send(self, method: str, route: str, headers: dict[str, str] | None = None, **kw: Any):
        return httpx.request(method, self.url + route, headers=headers or {}, timeout=10, **kw)

    def put(self, route: str, body: Any, headers: dict[str, str] = ADMIN, **kw: Any):
        return self.send("PUT", route, {**headers, **JSON_TYPE}, content=json.dumps(body), **kw)

    def chat(self, headers: dict[str, str] = PROXY):
        body = json.dumps({"model": "main", "messages": HELLO})
        return self.send("POST", "/v1/chat/completions", {**headers, **JSON_TYPE}, content=body)


@pytest.fixture
def start(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("A_API_KEY", PROVIDER_KEY)
    servers: list[ServerThread] = []

    def run(template: str = KEYED, *, admin_keys: bool = True, **fakes: Any) -> Server:
        a, b = fakes.get("a") or fake("a"), fakes.get("b") or fake("b")
        path = tmp_path / "chain429.yaml"
        admin = "  adminKeys: [admin-key]\n" if admin_keys else ""
        path.write_text(
            template.format(a=a.base_url, b=b.base_url, admin=admin, literal="sk-literal-b-4242")
        )
        server = ServerThread(create_app(load_config(path), config_path=path)).start()
        servers.append(server)
        return Server(path, server)

    yield run
    for server in servers:
        server.stop()


def keys_seen(provider) -> list[str]:
    return [r.headers.get("authorization", "") for r in provider.requests]


# ---------------------------------------------------------------- 1. keys stay home


def test_moving_a_provider_elsewhere_needs_its_key_again(start, fake):
    """The attack: PUT baseUrl=<my server>, keep the stored key, wait for `Bearer sk-...`."""
    evil = fake("evil")
    s = start()
    before = s.path.read_text()
    moved = s.put("/v1/admin/providers/a", {"type": "generic-openai", "baseUrl": evil.base_url})
    assert moved.status_code == 422, moved.text
    error = moved.json()["error"]
    assert error["param"] == "providers[0].apiKey" and "key again" in error["message"]
    assert s.path.read_text() == before
    # The masked key sent back (what a form round-trips) is not "the key again" either.
    masked = s.send("GET", "/v1/admin/config", ADMIN).json()["config"]["providers"][1]
    moved_b = s.put("/v1/admin/providers/b", {**masked, "baseUrl": evil.base_url})
    assert moved_b.status_code == 422 and moved_b.json()["error"]["param"] == "providers[1].apiKey"
    # A type change points the key at another preset's URL: the same rule.
    retyped = s.put("/v1/admin/providers/b", {**masked, "type": "groq", "baseUrl": None})
    assert retyped.status_code == 422
    assert s.chat().status_code == 200
    assert evil.requests == [] and s.path.read_text() == before


def test_secret_headers_do_not_follow_a_moved_provider(start, fake):
    evil = fake("evil")
    s = start()
    shown = s.send("GET", "/v1/admin/config", ADMIN).json()["config"]["providers"][0]
    assert shown["headers"]["X-Api-Token"] != "literal-header-secret-1234"
    moved = s.put(
        "/v1/admin/providers/a",
        {**shown, "baseUrl": evil.base_url, "apiKey": "${A_API_KEY}"},
    )
    assert moved.status_code == 422
    assert moved.json()["error"]["param"] == "providers[0].headers.X-Api-Token"
    assert evil.requests == []


def test_a_moved_provider_with_its_key_named_again_is_accepted(start, fake):
    elsewhere = fake("elsewhere")
    s = start()
    moved = s.put(
        "/v1/admin/providers/a",
        {"type": "generic-openai", "baseUrl": elsewhere.base_url, "apiKey": "${A_API_KEY}"},
    )
    assert moved.status_code == 200, moved.text
    assert s.chat().headers["x-429chain-provider"] == "a/model-a"
    assert keys_seen(elsewhere) == [f"Bearer {PROVIDER_KEY}"]
    # Edits that keep the destination need no key (a form need not echo it).
    renamed = s.put(
        "/v1/admin/providers/a",
        {"type": "generic-openai", "baseUrl": elsewhere.base_url, "name": "A"},
    )
    assert renamed.status_code == 200, renamed.text
    assert "${A_API_KEY}" in s.path.read_text()


def test_without_admin_keys_proxy_keys_read_but_never_write(start, fake):
    evil = fake("evil")
    s = start(admin_keys=False)
    assert s.send("GET", "/v1/admin/config", PROXY).status_code == 200
    assert s.send("GET", "/v1/admin/status", PROXY).status_code == 200
    before = s.path.read_text()
    body = {"type": "generic-openai", "baseUrl": evil.base_url, "apiKey": "${A_API_KEY}"}
    for method, route, payload in [
        ("PUT", "/v1/admin/providers/a", body),
        ("PUT", "/v1/admin/providers/new", body),
        ("PATCH", "/v1/admin/settings", {"cooldownDefaultMs": 1}),
        ("DELETE", "/v1/admin/chains/main", None),
        ("POST", "/v1/test/chain/main", None),
    ]:
        content = json.dumps(payload) if payload is not None else None
        answer = s.send(method, route, {**PROXY, **JSON_TYPE}, content=content)
        assert answer.status_code == 403, (method, route, answer.text)
        assert "adminKeys" in answer.json()["error"]["message"]
    assert s.path.read_text() == before and evil.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        "http://[fd00:ec2::254]/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://[::ffff:169.254.169.254]/v1",
    ],
)
def test_metadata_addresses_are_never_a_provider(start, url):
    s = start()
    answer = s.put(
        "/v1/admin/providers/meta",
        {"type": "generic-openai", "baseUrl": url, "apiKey": "${A_API_KEY}"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["path"] == "providers[2].baseUrl"
    assert "allowPrivateUpstreams" in answer.json()["errors"][0]["message"]


# ---------------------------------------------------------------- 2. web pages


def test_dns_rebinding_cannot_reach_a_keyless_server(start):
    """A page on attacker.example rebinds its name to 127.0.0.1: its requests name its host."""
    s = start(KEYLESS)
    port = s.server.port
    for route in ("/v1/admin/config", "/v1/models", "/health"):
        rebound = s.send("GET", route, {"host": f"attacker.example:{port}"})
        assert rebound.status_code == 421, route
        assert rebound.json()["error"]["code"] == "misdirected_request"
        assert PROVIDER_KEY not in rebound.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"app.localhost:{port}"):
        assert s.send("GET", "/v1/admin/config", {"host": host}).status_code == 200, host


def test_allowed_hosts_are_answered(start):
    s = start(KEYLESS.replace("  defaultChain", "  allowedHosts: [box.lan]\n  defaultChain"))
    assert s.send("GET", "/v1/models", {"host": "box.lan:3429"}).status_code == 200
    assert s.send("GET", "/v1/models", {"host": "other.lan"}).status_code == 421


def test_with_keys_any_host_is_answered_unless_allowed_hosts_is_set(start):
    s = start()
    assert s.send("GET", "/v1/models", {**PROXY, "host": "proxy.internal"}).status_code == 200
    s.path.write_text(
        s.path.read_text().replace(
            "  defaultChain", "  allowedHosts: [llm.example.com]\n  defaultChain"
        )
    )
    assert s.send("POST", "/v1/admin/reload", ADMIN).status_code == 200
    assert s.send("GET", "/v1/models", {**PROXY, "host": "proxy.internal"}).status_code == 421
    assert s.send("GET", "/v1/models", {**PROXY, "host": "llm.example.com"}).status_code == 200


def test_a_cross_site_post_spends_no_quota(start):
    """`<form enctype=text/plain>` or `fetch(no-cors)` from any page, to 127.0.0.1."""
    s = start(KEYLESS)
    a = s.server.app.ctx.snapshot.config.provider("a")
    assert a is not None
    body = json.dumps({"model": "main", "messages": HELLO})
    page = {"origin": "https://evil.example"}
    plain = s.send(
        "POST", "/v1/chat/completions", {**page, "content-type": "text/plain"}, content=body
    )
    assert plain.status_code == 403 and plain.json()["error"]["code"] == "origin_not_allowed"
    # Even without an Origin (some embeds omit it), a simple content type is refused.
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        answer = s.send("POST", "/v1/chat/completions", {"content-type": media}, content=body)
        assert answer.status_code == 415, media
        assert answer.json()["error"]["code"] == "unsupported_media_type"
    blob = s.send("POST", "/v1/chat/completions", content=body)  # a Blob with no type
    assert blob.status_code == 415
    json_from_page = s.send("POST", "/v1/chat/completions", {**page, **JSON_TYPE}, content=body)
    assert json_from_page.status_code == 403
    # The server's own pages (same origin) and clients without Origin work.
    own = {"origin": s.url, **JSON_TYPE}
    assert s.send("POST", "/v1/chat/completions", own, content=body).status_code == 200
    assert s.send("POST", "/v1/chat/completions", JSON_TYPE, content=body).status_code == 200


def test_a_foreign_origin_cannot_edit_the_config(start):
    s = start(KEYLESS)
    before = s.path.read_text()
    answer = s.send(
        "PATCH",
        "/v1/admin/settings",
        {"origin": "http://evil.example", **JSON_TYPE},
        content=json.dumps({"cooldownDefaultMs": 5}),
    )
    assert answer.status_code == 403
    yaml_as_text = s.send("POST", "/v1/admin/diff", {"content-type": "text/plain"}, content=before)
    assert yaml_as_text.status_code == 415
    assert s.path.read_text() == before


def test_cors_preflights_are_answered_only_for_listed_origins(start):
    s = start()
    ask = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization",
    }
    refused = s.send("OPTIONS", "/v1/chat/completions", {"origin": "https://app.example", **ask})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    s.path.write_text(
        s.path.read_text().replace(
            "  defaultChain", "  corsOrigins: [https://app.example]\n  defaultChain"
        )
    )
    assert s.send("POST", "/v1/admin/reload", ADMIN).status_code == 200
    allowed = s.send("OPTIONS", "/v1/chat/completions", {"origin": "https://app.example", **ask})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    answer = s.chat({**PROXY, "origin": "https://app.example"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-429chain-trace" in answer.headers["access-control-expose-headers"]
    other = s.send("OPTIONS", "/v1/models", {"origin": "https://other.example", **ask})
    assert other.status_code == 403


def test_a_405_names_the_allowed_methods(start):
    s = start()
    answer = s.send("GET", "/v1/chat/completions", PROXY)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------- 3. secrets stay secret


def test_a_submitted_config_cannot_read_the_environment(start, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-very-secret-value-1")
    s = start()
    probe = s.path.read_text().replace("model: model-a", "model: ${AWS_SECRET_ACCESS_KEY}")
    for route in ("/v1/admin/validate", "/v1/admin/diff"):
        answer = s.send("POST", route, {**ADMIN, **YAML_TYPE}, content=probe)
        assert answer.status_code == 422, route
        assert "aws-very-secret-value-1" not in answer.text
        assert "may not be referenced" in answer.json()["errors"][0]["message"]
    edit = s.put(
        "/v1/admin/chains/leak",
        {"entries": [{"provider": "a", "model": "${AWS_SECRET_ACCESS_KEY}"}]},
    )
    assert edit.status_code == 422 and "aws-very-secret" not in edit.text


def test_diff_and_validate_never_echo_a_resolved_value(start, monkeypatch):
    monkeypatch.setenv("OTHER_API_KEY", "other-key-value-5555")
    s = start()
    moved = s.path.read_text().replace("model: model-a", "model: ${OTHER_API_KEY}")
    diff = s.send("POST", "/v1/admin/diff", {**ADMIN, **YAML_TYPE}, content=moved)
    assert diff.status_code == 200, diff.text
    assert "other-key-value-5555" not in diff.text and PROVIDER_KEY not in diff.text
    assert "${OTHER_API_KEY}" in diff.json()["unified"]
    assert any("${OTHER_API_KEY}" in line for line in diff.json()["summary"])
    typed = s.path.read_text().replace(
        "defaultChain: main", "defaultChain: main\n  port: ${OTHER_API_KEY}"
    )
    invalid = s.send("POST", "/v1/admin/validate", {**ADMIN, **YAML_TYPE}, content=typed)
    assert invalid.status_code == 422
    assert "other-key-value-5555" not in invalid.text
    assert invalid.json()["errors"][0]["path"] == "settings.port"


def test_public_health_says_when_not_why(start, monkeypatch):
    s = start()
    monkeypatch.setenv("A_API_KEY", "")  # the file's reference now resolves to nothing
    s.path.write_text(
        s.path.read_text().replace("defaultChain: main", "defaultChain: ${A_API_KEY}x")
    )
    assert s.send("POST", "/v1/admin/reload", ADMIN).status_code == 422
    public = s.send("GET", "/health").json()
    assert public["config_error"]["rejected_at"] > 0 and "errors" not in public["config_error"]
    detailed = s.send("GET", "/health", ADMIN).json()["config_error"]
    assert detailed["errors"][0]["path"] == "settings.defaultChain"


# ---------------------------------------------------------------- 4. edits keep it closed


@pytest.fixture
def public(start):
    """A server deployed on a non-loopback address (the test itself binds 127.0.0.1)."""
    s = start()
    s.server.app.ctx.bind_host = "10.20.30.40"
    return s


def test_an_edit_cannot_drop_the_keys_of_a_public_server(public):
    before = public.path.read_text()
    answer = public.send(
        "PATCH", "/v1/admin/settings", {**ADMIN, **JSON_TYPE}, content=json.dumps({"apiKeys": None})
    )
    assert answer.status_code == 422, answer.text
    assert "10.20.30.40 without settings.apiKeys" in answer.json()["error"]["message"]
    assert public.path.read_text() == before
    assert public.chat({}).status_code == 401


def test_a_hot_reload_cannot_drop_the_keys_of_a_public_server(public):
    public.path.write_text(public.path.read_text().replace("  apiKeys: [proxy-key]\n", ""))
    assert public.send("POST", "/v1/admin/reload", ADMIN).status_code == 422
    assert public.chat({}).status_code == 401
    assert public.chat().status_code == 200
    status = public.send("GET", "/v1/admin/status", ADMIN).json()
    assert "without settings.apiKeys" in status["last_error"][0]["message"]


def test_an_edit_of_an_emptied_file_is_refused_not_written(start):
    """Today's bug: a PATCH on an emptied file wrote a config of the patch alone."""
    s = start()
    s.path.write_text("")
    answer = s.send(
        "PATCH",
        "/v1/admin/settings",
        {**ADMIN, **JSON_TYPE},
        content=json.dumps({"logLevel": "debug"}),
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["errors"][0]["message"] == "file is empty"
    assert s.path.read_text() == ""
    assert s.chat().status_code == 200  # the running config is untouched


@pytest.mark.parametrize("setting", ["dbPath", "databaseUrl", "db_path", "allowPrivateUpstreams"])
def test_deploy_time_settings_are_not_edited_over_the_api(start, setting):
    s = start()
    before = s.path.read_text()
    answer = s.send(
        "PATCH", "/v1/admin/settings", {**ADMIN, **JSON_TYPE}, content=json.dumps({setting: "x"})
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "deploy_time_setting"
    assert s.path.read_text() == before


def test_the_request_log_is_readable_by_its_owner_only(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'new' / 'log.db'}")
    database.connect()
    database.execute_sql("create table t (x)")
    database.execute_sql("insert into t values (1)")
    for name in ("log.db", "log.db-wal", "log.db-shm"):
        mode = stat.S_IMODE(os.stat(tmp_path / "new" / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    database.close()


# ---------------------------------------------------------------- 5. no input breaks it


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_is_a_400(start):
    s = start()
    deep = '{"model": "main", "messages": [{"role": "user", "content": ' + nested(100_000) + "}]}"
    answer = s.send("POST", "/v1/chat/completions", {**PROXY, **JSON_TYPE}, content=deep)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["error"]["message"]
    admin = s.send("PUT", "/v1/admin/chains/x", {**ADMIN, **JSON_TYPE}, content=nested(100_000))
    assert admin.status_code == 400


def test_admin_bodies_are_read_only_after_the_key_is_checked(start):
    s = start()
    for headers in ({}, PROXY):
        answer = s.send("PUT", "/v1/admin/chains/x", {**headers, **JSON_TYPE}, content="{nope")
        assert answer.status_code in (401, 403), answer.text


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", -100000),
        ("max_tokens", 0),
        ("max_tokens", "64"),
        ("max_tokens", True),
        ("max_tokens", 1.5),
        ("max_completion_tokens", 10**12),
    ],
)
def test_token_limits_must_be_sane(start, field, value):
    s = start()
    body = json.dumps({"model": "main", "messages": HELLO, field: value})
    answer = s.send("POST", "/v1/chat/completions", {**PROXY, **JSON_TYPE}, content=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == field


def test_a_control_character_in_the_file_is_a_config_error(start):
    s = start()
    s.path.write_text(s.path.read_text().replace("model: model-b", "model: model\x07b"))
    answer = s.send("POST", "/v1/admin/reload", ADMIN)
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert error["line"] == 23 and "U+0007" in error["message"] and "column 21" in error["message"]
    assert s.send("GET", "/health").json()["config_error"] is not None
    validated = s.send(
        "POST", "/v1/admin/validate", {**ADMIN, **YAML_TYPE}, content=s.path.read_text()
    )
    assert validated.status_code == 422 and validated.json()["errors"][0]["line"] == 23


def test_an_unexpected_error_is_logged_with_its_status(fake, tmp_path, monkeypatch):
    """A bug on the request path answers 500 and leaves a record saying so (not status 0)."""
    from chain429.requestlog.database import migrate
    from chain429.requestlog.writer import Telemetry

    monkeypatch.setenv("A_API_KEY", PROVIDER_KEY)
    a, b = fake("a"), fake("b")
    path = tmp_path / "chain429.yaml"
    path.write_text(KEYED.format(a=a.base_url, b=b.base_url, admin="", literal="sk-x-123456789"))
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    telemetry = Telemetry(database, batch_interval_s=0.01)
    app = create_app(load_config(path), config_path=path, telemetry=telemetry)
    with ServerThread(app) as server:

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        app.ctx.router.complete = broken  # the fault: any bug below the handler
        answer = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers={**PROXY, **JSON_TYPE},
            content=json.dumps({"model": "main", "messages": HELLO}),
        )
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "internal_error"
        request_id = answer.headers.get("x-request-id")
    telemetry_rows = database.execute_sql("select id, status, outcome from requests").fetchall()
    assert [(status, outcome) for _, status, outcome in telemetry_rows] == [(500, "internal_error")]
    assert request_id is None or telemetry_rows[0][0] == request_id
    time.sleep(0)


# ---------------------------------------------------------------- 9. what the fuzzer found


def test_a_bad_body_is_reported_even_when_if_match_is_stale(start):
    """A missing `type` or `entries` used to hide behind the 412 of a stale If-Match."""
    s = start()
    stale = {**ADMIN, "if-match": '"999"'}
    provider = s.put("/v1/admin/providers/x", {"baseUrl": "http://127.0.0.1:9/v1"}, stale)
    assert provider.status_code == 422 and provider.json()["errors"][0]["path"].endswith(".type")
    chain = s.put("/v1/admin/chains/x", {}, stale)
    assert chain.status_code == 422 and chain.json()["errors"][0]["path"].endswith(".entries")
    good = s.put("/v1/admin/chains/x", {"entries": [{"provider": "a", "model": "m"}]}, stale)
    assert good.status_code == 412


def test_the_document_says_what_the_server_refuses(start):
    s = start()
    document = s.send("GET", "/openapi.json").json()
    # `since=` is a 400 (tests/requestlog): the document says an empty value is not one.
    assert document["components"]["parameters"]["chain"]["schema"]["minLength"] == 1
    since = document["components"]["parameters"]["since"]["schema"]["anyOf"]
    assert {"format": "date-time", "type": "string"} in since
    validate = document["paths"]["/v1/admin/validate"]["post"]
    assert "application/yaml" in validate["requestBody"]["content"]
    assert {"415", "421"} <= set(document["paths"]["/v1/chat/completions"]["post"]["responses"])
    empty = s.send("POST", "/v1/admin/validate", {**ADMIN, **YAML_TYPE}, content="{}")
    assert empty.status_code == 422
    assert "version" in empty.json()["errors"][0]["message"]


def test_providers_named_by_host_name_go_through_the_guarded_resolver(fake, proxy):
    """Names are resolved when connecting and the answers checked (tests/upstream)."""
    from fixtures.servers import chain_config, provider_entry

    a = fake("a")
    by_name = provider_entry("a", a, baseUrl=a.base_url.replace("127.0.0.1", "localhost"))
    p = proxy(chain_config([by_name], [("a", "m")]))
    with p.http() as http:
        answer = http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
    assert answer.status_code == 200 and answer.headers["x-429chain-provider"] == "a/m"
    assert len(a.requests) == 1
