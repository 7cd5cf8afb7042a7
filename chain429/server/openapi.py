"""The server's OpenAPI 3.1 document, served at `GET /openapi.json`.

Written by hand: here the operations (which route takes what and answers
what), in `openapi_schemas` the bodies and shared components. `DOCUMENT` is built
once at import. Each app serves the operations it actually has (an app without
the admin routes does not advertise them), as JSON bytes built once, at its
first `/openapi.json` request, when every route is registered.

`tests/server/test_openapi.py` fails when a route has no operation here, or an
operation here has no route.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.server.context import App, AppRequest
from chain429.server.openapi_schemas import (
    ATTEMPT,
    BUCKET_ROW,
    BUDGET,
    CHAIN_ROW,
    CHAIN_TEST,
    CLEAR_REQUEST,
    CLEARED,
    CLIENT_ROW,
    CLIENT_VIEW,
    ENDPOINT_ROW,
    HEADERS,
    KINDS,
    PARAMETERS,
    PAUSE_REQUEST,
    PAUSED,
    PROVIDER_ROW,
    PROVIDER_TEST,
    RELOAD,
    RESUMED,
    SECURITY,
    SECURITY_SCHEMES,
    SPEND,
    STATUS,
    SUMMARY,
    VALIDATE_FAILED,
    Schema,
    component_schemas,
    const,
    header_refs,
    list_of,
    nullable,
    obj,
    param_refs,
    path_param,
    ref,
    typed,
)
from chain429.server.web_ui import assets

OPENAPI_PATH = "/openapi.json"
_SANIC_PARAM = re.compile(r"<([^:>]+)(?::[^>]*)?>")

# -- operations --------------------------------------------------------------

_ERROR_TEXT = {
    401: "Missing or unknown key.",
    403: "A proxy or client key on an admin route, or a request from a web page whose origin "
    "is not allowed (`origin_not_allowed`).",
    413: "The body is over `settings.maxBodyBytes`.",
    415: "The body's `Content-Type` is not the one this route takes.",
    421: "Without keys (or with `settings.allowedHosts`): `Host` is not a loopback name nor "
    "an allowed host (`misdirected_request`).",
}
_WATERFALL = (
    "X-Request-Id",
    "X-429chain-Client",
    "X-429chain-Chain",
    "X-429chain-Route",
    "X-429chain-Alias",
    "X-429chain-Provider",
    "X-429chain-Attempts",
    "X-429chain-Trace",
)


def _answer(description: str, schema: Schema, *headers: str) -> Schema:
    answer: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = header_refs(*headers)
    return answer


def _op(
    operation_id: str,
    tag: str,
    summary: str,
    ok: Schema,
    *,
    description: str = "",
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    errors: dict[int, str] | None = None,
    headers: tuple[str, ...] = (),
    extra: dict[str, Schema] | None = None,
) -> Schema:
    """One operation. 401/403/413 follow from the tag and the body; `errors` adds others.

    `ok` is the 200 answer, or a schema for a JSON one; `headers` go on every error answer.
    """
    security = SECURITY["admin" if tag in ("stats", "admin") else tag]
    codes = {**({401: _ERROR_TEXT[401]} if security else {}), 421: _ERROR_TEXT[421]}
    codes.update(errors or {})
    if security is SECURITY["admin"] or body is not None:
        codes.setdefault(403, _ERROR_TEXT[403])
    if body is not None:
        codes.setdefault(413, _ERROR_TEXT[413])
        codes.setdefault(415, _ERROR_TEXT[415])
    responses = {"200": ok if "content" in ok else _answer("The answer.", ok), **(extra or {})}
    for status, text in codes.items():
        responses.setdefault(str(status), _answer(text, ref("Error"), *headers))
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    op.update(security=security, responses=dict(sorted(responses.items())))
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


def _json_body(name: str) -> Schema:
    return {"application/json": {"schema": ref(name)}}


_CHAT_OK: Schema = {
    "description": "The provider's answer. With `stream: true`, server-sent events relayed "
    "chunk by chunk (`chat.completion.chunk`), ending with `data: [DONE]`; a stream that dies "
    "mid-answer ends with an error event (`stream_stalled`, `stream_interrupted`, "
    "`stream_too_long`) instead.",
    "headers": header_refs(*_WATERFALL),
    "content": {
        "application/json": {"schema": ref("ChatCompletion")},
        "text/event-stream": {
            "schema": obj(
                "data event id",
                "data",
                "One server-sent event (`Cache-Control: no-cache`); its `data` is a "
                "`chat.completion.chunk` as JSON, `[DONE]` at the end, or an `error` object.",
            ),
            "example": 'data: {"object": "chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
        },
    },
}
_PROXY_ERRORS = {
    400: "Invalid request, before any provider is asked; or the provider's own 400, relayed "
    "unchanged (the request itself is wrong).",
    403: "A client key (`clients:`) naming a chain outside its `chains` "
    "(`model_not_allowed`); or a web page whose origin is not allowed.",
    404: "`model` names no chain this route takes, and there is no default chain of its kind "
    "(or `settings.strictModels`) (`model_not_found`); or a chain of the other kind "
    "(`wrong_endpoint`).",
    422: "The provider's 422, relayed unchanged.",
    429: "The client (`clients:`) is over one of its own limits (`client_rate_limited`, "
    "`rate_limit_error`): the message names it, `Retry-After` and `retry-after-ms` say "
    "when to come back. No provider was asked.",
    503: "Every entry failed or is cooling down (`all_providers_exhausted`), or queue mode "
    "gave up (`queue_timeout`, `queue_full`, `queue_shutdown`).",
}


def _proxied(op_id: str, summary: str, ok: Schema, body: str, description: str) -> Schema:
    """A proxied route: `model` names a chain, the waterfall answers (docs/api.md)."""
    return _op(
        op_id,
        "proxy",
        summary,
        ok,
        description=description,
        parameters=param_refs("MaxWait"),
        body=_json_body(body),
        errors=_PROXY_ERRORS,
        headers=(*_WATERFALL, "Retry-After", "retry-after-ms"),
    )


_CHAT = _proxied(
    "createChatCompletion",
    "A chat completion, answered by the first entry of the chain that works",
    _CHAT_OK,
    "ChatCompletionRequest",
    "`model` names a chat chain. docs/api.md says what each upstream answer does.",
)
_COMPLETION_OK = {
    "description": "The provider's answer. With `stream: true`, server-sent events relayed "
    "chunk by chunk (`text_completion`), ending with `data: [DONE]`; a stream that dies "
    "mid-answer ends with an error event instead.",
    "headers": header_refs(*_WATERFALL),
    "content": {
        "application/json": {"schema": ref("Completion")},
        "text/event-stream": _CHAT_OK["content"]["text/event-stream"],
    },
}
_COMPLETION = _proxied(
    "createCompletion",
    "A legacy text completion, answered by the first entry of a chat chain that works",
    _COMPLETION_OK,
    "CompletionRequest",
    "`model` names a chat chain; each entry is asked at its provider's `/completions`. An "
    "entry whose provider has none (a 404 or 405) is passed over without a cooldown.",
)
_EMBEDDING = _proxied(
    "createEmbedding",
    "Embeddings, answered by the first entry of an embeddings chain that works",
    _answer("The provider's answer, relayed as it came.", ref("EmbeddingList"), *_WATERFALL),
    "EmbeddingRequest",
    "`model` names a chain of `kind: embeddings`.",
)


def _stats(op_id: str, summary: str, kind: str, row: Schema, *params: str, **more: Any) -> Schema:
    """A `/v1/stats/*` list answer: the range, then one row per provider, chain or bucket."""
    body = obj("", "object data", object=const(kind), data=list_of(row), **more)
    return _op(
        op_id,
        "stats",
        summary,
        {"allOf": [ref("StatsRange"), body]},
        parameters=param_refs("since", "until", *params),
        errors=_STATS_ERRORS,
    )


_STATS_ERRORS = {
    400: "An unknown, repeated, empty or malformed parameter (`param` names it).",
    503: "The request log is off (`request_log_disabled`).",
}


def _admin_write(op_id: str, summary: str, path: list[Schema], body: str | None) -> Schema:
    return _op(
        op_id,
        "admin",
        summary,
        _answer("Written and in force.", ref("WriteResult"), "ETag"),
        description="The whole new config is validated, written atomically (comments and "
        "`${VAR}` references kept), then swapped in.",
        parameters=[*path, *param_refs("IfMatch")],
        body=_json_body(body) if body else None,
        errors={
            400: "The body is not a JSON object, or names another id than the path.",
            404: "No such provider, chain, alias or client.",
            409: "Started without a config file, or the edit conflicts with the config.",
        },
        extra={
            "412": _answer("`If-Match` names an older generation.", ref("Error"), "ETag"),
            "422": _answer("The new config is invalid.", ref("InvalidConfig"), "ETag"),
        },
    )


_YAML_BODY = {
    media: {"schema": typed("string", "A chain429 or 429chain config file.")}
    for media in ("application/yaml", "text/yaml")
}
_PROVIDER_ID = [path_param("provider_id", "The provider's id.")]
_CHAIN_NAME = [path_param("name", "The chain's name.")]
_ALIAS_NAME = [
    path_param("name", "The alias (`model` as apps send it; a slash may be sent as `%2F`).")
]
_REQUEST_ID = [path_param("request_id", "The request's id (its `X-Request-Id`).")]
_METRICS_OK = {
    "description": "Prometheus text format.",
    "content": {"text/plain; version=0.0.4": {"schema": typed("string")}},
}
_CLIENT_NAME = [path_param("name", "The client's name.")]
_REQUEST_FILTERS = (
    "chain",
    "provider",
    "status",
    "outcome",
    "endpoint",
    "client",
    "limit",
    "cursor",
)


def _probe_ok(schema: Schema) -> Schema:
    """A test's answer: JSON at the end, or each entry live as server-sent events."""
    answer = _answer("Each entry's result.", schema, "ETag")
    answer["content"]["text/event-stream"] = {
        "schema": typed(
            "string",
            "With `Accept: text/event-stream`: one `data:` JSON event per step: `start` (the "
            "entries, each with its `index`), `delta` (`index`, `text`: streamed text as it "
            "arrives, with `stream=true`), `result` (`index` and that entry's result, as soon "
            "as it is done), then `done` (the JSON answer).",
        ),
        "example": 'data: {"type": "delta", "index": 0, "text": "OK"}\n\n',
    }
    return answer


_UI_FILE_TYPES = ("text/html", "text/javascript", "text/css", "image/svg+xml")
_UI_ERRORS = {404: "No such file in the web UI (`not_found`)."}
_NOT_MODIFIED = {"304": {"description": "Unchanged since the `ETag` in `If-None-Match`."}}


def _redirect_to_ui(operation_id: str) -> Schema:
    """`/` and `/ui` send the browser to `/ui/`: a 302, never a 200."""
    location = {"Location": {"schema": typed("string")}}
    found = {"302": {"description": "To `/ui/`.", "headers": location}}
    op = _op(operation_id, "server", "Redirect to the web UI", typed("object"), extra=found)
    del op["responses"]["200"]
    return op


_PATHS: Schema = {}


def _route(method: str, path: str, op: Schema) -> None:
    _PATHS.setdefault(path, {})[method] = op


# A table, aligned by hand: one route a line where it fits.
# fmt: off
_route("get", "/health", _op("getHealth", "server", "Liveness and config state", ref("Health")))
_route("get", "/metrics", _op(
    "getMetrics", "server", "Prometheus metrics", _METRICS_OK,
    description="Needs an admin key unless `settings.metricsPublic: true`.",
    errors={401: _ERROR_TEXT[401], 403: _ERROR_TEXT[403]}))
_PATHS["/metrics"]["get"]["security"] = [*SECURITY["admin"], {}]  # {}: with metricsPublic
_route("get", OPENAPI_PATH, _op("getOpenAPI", "server", "This document", typed("object")))
_route("get", "/v1/models", _op("listModels", "proxy", "Chains, then entry models",
                                ref("ModelList")))
_route("get", "/v1/ratelimits", _op("getRateLimits", "proxy", "Entry and bucket states",
                                    ref("RateLimitReport")))
_route("post", "/v1/chat/completions", _CHAT)
_route("post", "/v1/completions", _COMPLETION)
_route("post", "/v1/embeddings", _EMBEDDING)

_route("get", "/v1/stats/summary", _op(
    "statsSummary", "stats", "Totals over the range",
    {"allOf": [ref("StatsRange"), SUMMARY]},
    parameters=param_refs("since", "until", "endpoint"), errors=_STATS_ERRORS))
_route("get", "/v1/stats/providers", _stats(
    "statsProviders", "Per provider: requests answered, attempts by outcome",
    "stats.providers", PROVIDER_ROW, "endpoint"))
_route("get", "/v1/stats/chains", _stats(
    "statsChains", "Per chain: requests, errors, tokens, latency", "stats.chains", CHAIN_ROW,
    "endpoint"))
_route("get", "/v1/stats/endpoints", _stats(
    "statsEndpoints", "Per proxied route: chat, completions, embeddings", "stats.endpoints",
    ENDPOINT_ROW))
_route("get", "/v1/stats/clients", _stats(
    "statsClients", "Per client: requests, errors, its own 429s, tokens, latency",
    "stats.clients", CLIENT_ROW, "endpoint"))
_route("get", "/v1/stats/clients/{client_name}", _op(
    "statsClient", "stats", "One client's row",
    {"allOf": [ref("StatsRange"), CLIENT_ROW]},
    parameters=[path_param("client_name", "The client's name."),
                *param_refs("since", "until", "endpoint")],
    errors={**_STATS_ERRORS, 404: "Nothing logged for it in the range (`not_found`)."}))
_route("get", "/v1/stats/providers/{provider_id}", _op(
    "statsProvider", "stats", "One provider's row (429chain's path)",
    {"allOf": [ref("StatsRange"), PROVIDER_ROW]},
    parameters=[*_PROVIDER_ID, *param_refs("since", "until", "endpoint")],
    errors={**_STATS_ERRORS, 404: "Nothing logged for it in the range (`not_found`)."}))
_route("get", "/v1/stats/chains/{chain_name}", _op(
    "statsChain", "stats", "One chain's row (429chain's path)",
    {"allOf": [ref("StatsRange"), CHAIN_ROW]},
    parameters=[path_param("chain_name", "The chain's name."),
                *param_refs("since", "until", "endpoint")],
    errors={**_STATS_ERRORS, 404: "Nothing logged for it in the range (`not_found`)."}))
_route("get", "/v1/stats/timeseries", _stats(
    "statsTimeseries", "Per UTC-aligned time bucket, empty ones included", "stats.timeseries",
    BUCKET_ROW, "endpoint", "bucket", bucket=typed("string"), bucket_ms=typed("integer")))
_route("get", "/v1/stats/spend", _op(
    "statsSpend", "stats", "What priced answers cost: in total, and per provider, chain or client",
    {"allOf": [ref("StatsRange"), SPEND, obj(
        "by", "object by data", object=const("stats.spend"),
        data=list_of({"allOf": [SPEND, obj("provider:s? chain:s? client:s?")]},
                     "The costliest first; only the `by` name is present (null: none)."))]},
    parameters=param_refs("since", "until", "by"), errors=_STATS_ERRORS))
_route("get", "/v1/stats/requests", _stats(
    "statsRequests", "Logged requests, newest first, a page at a time", "list",
    ref("RequestLogRow"), *_REQUEST_FILTERS, has_more=typed("boolean"),
    next_cursor=nullable("string", "Pass as `cursor` for the next page; null at the end.")))
_route("get", "/v1/stats/requests/{request_id}", _op(
    "statsRequest", "stats", "One request and its attempt trail in order",
    {"allOf": [ref("RequestLogRow"), obj(trail=list_of(ATTEMPT))]},
    parameters=_REQUEST_ID,
    errors={**_STATS_ERRORS, 404: "No such request in the log (`not_found`)."}))

_route("get", "/v1/admin/config", _op(
    "getConfig", "admin", "The config file, secrets masked",
    _answer("The config in force.", obj("generation:i path:s? config:o"), "ETag")))
_route("put", "/v1/admin/providers/{provider_id}", _admin_write(
    "putProvider", "Add or replace a provider", _PROVIDER_ID, "ProviderConfig"))
_route("delete", "/v1/admin/providers/{provider_id}", _admin_write(
    "deleteProvider", "Delete a provider", _PROVIDER_ID, None))
_route("put", "/v1/admin/chains/{name}", _admin_write(
    "putChain", "Add or replace a chain", _CHAIN_NAME, "ChainConfig"))
_route("delete", "/v1/admin/chains/{name}", _admin_write(
    "deleteChain", "Delete a chain", _CHAIN_NAME, None))
_route("put", "/v1/admin/aliases/{name}", _admin_write(
    "putAlias", "Point an alias at a chain", _ALIAS_NAME, "AliasConfig"))
_route("delete", "/v1/admin/aliases/{name}", _admin_write(
    "deleteAlias", "Delete an alias", _ALIAS_NAME, None))
_route("get", "/v1/admin/clients", _op(
    "listClients", "admin", "The clients, keys masked, with their usage now",
    _answer("Every client.", obj("", "object data", object=const("list"),
                                 data=list_of(CLIENT_VIEW)), "ETag")))
_route("get", "/v1/admin/clients/{name}", _op(
    "getClient", "admin", "One client, key masked, with its usage now",
    _answer("The client.", CLIENT_VIEW, "ETag"), parameters=_CLIENT_NAME,
    errors={404: "No such client (`not_found`)."}))
_route("put", "/v1/admin/clients/{name}", _admin_write(
    "putClient", "Add or replace a client (its key as a `${VAR}` reference)", _CLIENT_NAME,
    "ClientConfig"))
_route("delete", "/v1/admin/clients/{name}", _admin_write(
    "deleteClient", "Delete a client", _CLIENT_NAME, None))
_route("patch", "/v1/admin/settings", _admin_write(
    "patchSettings", "Change some settings", [], "SettingsPatch"))
_route("post", "/v1/admin/validate", _op(
    "validateConfig", "admin", "Check a whole config file without using it",
    obj("", "valid", valid=typed("boolean", const=True)),
    body=_YAML_BODY,
    extra={"422": _answer("Invalid: every problem found.", VALIDATE_FAILED)}))
_route("post", "/v1/admin/diff", _op(
    "diffConfig", "admin", "What would change from the running config to this YAML",
    _answer("The semantic diff, summary lines and a unified diff.", obj(
        "valid:b same:b generation:i diff:o unified", "valid same diff",
        summary=list_of(typed("string"), "One line per change.")), "ETag"),
    body=_YAML_BODY,
    extra={"422": _answer("Invalid: every problem found.", VALIDATE_FAILED)}))
_route("post", "/v1/admin/reload", _op(
    "reloadConfig", "admin", "Read the config file again now",
    _answer("Reloaded, or unchanged.", RELOAD, "ETag"),
    extra={"422": _answer("The file is invalid; the running config is kept.", RELOAD, "ETag")}))
_route("get", "/v1/admin/status", _op(
    "getAdminStatus", "admin", "The config file, generation and last reload",
    _answer("The reloader's state.", STATUS, "ETag")))
_route("get", "/v1/admin/instances", _op(
    "listInstances", "admin", "The chain429 instances sharing this one's state store",
    obj("store this configs_differ:b problem:s?", "store this configs_differ instances",
        instances=list_of(obj(
            "id host pid:i version config_generation:i config_digest started_at:n last_seen:n",
            "id host pid version config_generation config_digest started_at last_seen",
            "One live instance. `config_digest` is a hash of its config (never the config); "
            "`configs_differ` is true when two instances' digests differ."))),
    description="With a shared store (Redis) every instance announces itself every "
    "`stateLeaseMs / 3` and leaves the list within `stateLeaseMs` of its last word; this "
    "instance comes first. With the memory store the list is this instance; `problem` says "
    "why the others cannot be read right now (Redis unreachable)."))
_route("get", "/v1/admin/budgets", _op(
    "getBudgets", "admin", "Paid budgets today: spent, reserved, left, when they reset",
    obj("time_zone day resets_at:t", "object time_zone day resets_at budgets",
        object=const("budgets"), budgets=list_of(BUDGET)),
    description="Every paid budget (docs/spend.md): `settings.paidBudgetUsdPerDay` first, then "
    "each client's `paidBudgetUsdPerDay`; empty without any. With a shared store (Redis) the "
    "numbers are every instance's together."))
_route("get", "/v1/admin/diff", _op(
    "diffFile", "admin", "What a reload would change: the config file against the running config",
    _answer("The semantic diff, summary lines and a unified diff.", obj(
        "valid:b same:b generation:i diff:o unified", "valid same diff",
        summary=list_of(typed("string"), "One line per change.")), "ETag"),
    errors={409: "Started without a config file (`no_config_file`)."},
    extra={"422": _answer("The file is invalid: every problem found.", VALIDATE_FAILED)}))
_route("post", "/v1/admin/limits/clear", _op(
    "clearLimits", "admin", "End an entry's or a provider's cooldowns now",
    CLEARED, description="The entries are asked again at once, without a probe, and their "
    "quota buckets' back-off starts over. `chain429 limits clear` does the same.",
    body={"application/json": {"schema": CLEAR_REQUEST}},
    errors={400: "A field is missing, empty or unknown (`param` names it).",
            404: "No such provider, or no chain entry with that model (`not_found`)."}))
_route("post", "/v1/admin/entries/pause", _op(
    "pauseEntry", "admin", "Skip a provider or an entry until it is resumed",
    PAUSED, description="Every request skips it (`skip:paused`), streams and probes too, on "
    "every instance sharing the state store; the pause survives restarts. Chain tests do not "
    "call it. `chain429 entry pause` does the same.",
    body={"application/json": {"schema": PAUSE_REQUEST}},
    errors={400: "A field is missing, empty or unknown (`param` names it).",
            404: "No such provider, or no chain entry with that model (`not_found`).",
            503: "The shared state store is unreachable (`state_store_unavailable`): "
                 "nothing changed."}))
_route("post", "/v1/admin/entries/resume", _op(
    "resumeEntry", "admin", "End the pause of an entry, or of a provider and its entries",
    RESUMED, description="`chain429 entry resume` does the same.",
    body={"application/json": {"schema": PAUSE_REQUEST}},
    errors={400: "A field is missing, empty or unknown (`param` names it).",
            404: "No such provider, or no chain entry with that model (`not_found`).",
            503: "The shared state store is unreachable (`state_store_unavailable`): "
                 "nothing changed."}))
_route("post", "/v1/test/chain/{name}", _op(
    "testChain", "admin", "Call every entry of a chain once, with a tiny request",
    _probe_ok(CHAIN_TEST),
    parameters=[*_CHAIN_NAME, *param_refs("stream")],
    errors={400: "`stream` is not true or false.", 404: "No such chain (`not_found`)."}))
_route("post", "/v1/test/provider/{provider_id}", _op(
    "testProvider", "admin", "Call each model a provider serves in a chain once",
    _probe_ok(PROVIDER_TEST), parameters=[*_PROVIDER_ID, *param_refs("stream")],
    errors={400: "`stream` is not true or false.", 404: "No such provider (`not_found`)."}))

# The web UI (chain429.server.web_ui): no key, no data.
_route("get", "/", _redirect_to_ui("webUiRoot"))
_route("get", "/ui", _redirect_to_ui("webUiBare"))
_route("get", "/ui/", _op(
    "webUi", "server", "The web UI (docs/ui.md)",
    {"description": "Its page, with a strict Content-Security-Policy and an `ETag`.",
     "content": {"text/html": {"schema": typed("string")}}}, extra=_NOT_MODIFIED))
_route("get", "/ui/{path}", _op(
    "webUiFile", "server", "One file of the web UI",
    {"description": "The file, with a strict Content-Security-Policy and an `ETag`.",
     "content": {kind: {"schema": typed("string")} for kind in _UI_FILE_TYPES}},
    parameters=[{"name": "path", "in": "path", "required": True,
                 "description": "The file's path under /ui/ (a slash may be sent as `%2F`).",
                 "schema": typed("string", enum=sorted(assets()))}],
    errors=_UI_ERRORS, extra=_NOT_MODIFIED))
# fmt: on


DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "chain429",
        "version": __version__,
        "summary": "An OpenAI-compatible proxy that walks a chain of providers on 429.",
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "tags": [
        {"name": "proxy", "description": "OpenAI-compatible routes; proxy keys."},
        {"name": "stats", "description": "The request log; admin keys."},
        {"name": "admin", "description": "Read, edit, validate and reload the config."},
        {"name": "server", "description": "Health, metrics and this document."},
    ],
    "paths": _PATHS,
    "components": {
        "schemas": component_schemas(),
        "parameters": PARAMETERS,
        "headers": {
            n: {"description": d, "schema": typed(KINDS[k])} for n, (d, k) in HEADERS.items()
        },
        "securitySchemes": SECURITY_SCHEMES,
    },
}

# -- serving -----------------------------------------------------------------


def openapi_path(sanic_path: str) -> str:
    """Sanic's `/a/<name:str>` as OpenAPI's `/a/{name}`."""
    path = _SANIC_PARAM.sub(r"{\1}", sanic_path)
    return path if path.startswith("/") else f"/{path}"


def app_operations(app: App) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app has, HEAD and OPTIONS aside."""
    return {
        (method.lower(), openapi_path(route.path))
        for route in app.router.routes
        for method in route.methods
        if method not in ("HEAD", "OPTIONS")
    }


def document_for(app: App) -> Schema:
    """`DOCUMENT` with only the operations this app serves."""
    served = app_operations(app)
    document = copy.deepcopy(DOCUMENT)
    paths: Schema = {}
    for path, item in document["paths"].items():
        kept = {method: op for method, op in item.items() if (method, path) in served}
        if kept:
            paths[path] = kept
    document["paths"] = paths
    return document


# Public, no key. The bytes are built once per app, at its first request, when
# every route is registered.
openapi_routes = Blueprint("openapi")


@openapi_routes.get(OPENAPI_PATH)
async def openapi_document(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    if ctx.openapi_json is None:
        ctx.openapi_json = json.dumps(document_for(request.app), indent=1).encode()
    return raw(ctx.openapi_json, 200, None, "application/json")
