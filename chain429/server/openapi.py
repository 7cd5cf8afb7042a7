"""The server's OpenAPI 3.1 document, served at `GET /openapi.json`.

Written by hand (routes, parameters, answers), except the provider, chain and
settings bodies of the admin API, which come from the config models themselves
so they cannot drift from what the config loader accepts. `DOCUMENT` is built
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

from pydantic import BaseModel
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.config.model import Chain, Provider, Settings
from chain429.config.schema import model_schema
from chain429.server.completions import MAX_WAIT_PATTERN
from chain429.server.web_ui import assets

Schema = dict[str, Any]

OPENAPI_PATH = "/openapi.json"
_SANIC_PARAM = re.compile(r"<([^:>]+)(?::[^>]*)?>")

# -- schema helpers ----------------------------------------------------------

_KINDS = {
    "s": "string",
    "i": "integer",
    "n": "number",
    "b": "boolean",
    "o": "object",
    "t": "string",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _t(kind: str | list[str], description: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if description:
        schema["description"] = description
    return schema


def _null(kind: str, description: str | None = None, **extra: Any) -> Schema:
    return _t([kind, "null"], description, **extra)


def _list_of(item: Schema, description: str | None = None) -> Schema:
    return _t("array", description, items=item)


def _obj(spec: str = "", required: str = "", description: str = "", /, **fields: Schema) -> Schema:
    """A loosely typed object (more fields may come): `spec` lists `name:kind` fields.

    Kinds: s(tring, the default), i(nteger), n(umber), b(oolean), o(bject),
    t (ISO 8601 date-time); a trailing `?` allows null. `fields` add schemas.
    """
    properties: Schema = {}
    for token in spec.split():
        name, _, kind = token.partition(":")
        code = kind.rstrip("?") or "s"
        schema = _t(_KINDS[code], format="date-time") if code == "t" else _t(_KINDS[code])
        if kind.endswith("?"):
            schema["type"] = [schema["type"], "null"]
        properties[name] = schema
    schema = {"type": "object", "properties": {**properties, **fields}}
    if required:
        schema["required"] = required.split()
    if description:
        schema["description"] = description
    return schema


def _const(value: str) -> Schema:
    return _t("string", const=value)


def _config_schema(model: type[BaseModel], schemas: Schema, drop: str | None = None) -> Schema:
    """A config model's JSON Schema (camelCase, as in YAML, with the descriptions of
    docs/config.md); its sub-models join `schemas`."""
    schema = model_schema(model, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    for found in (schema, *defs.values()):
        _null_means_default(found)
    schemas.update(defs)
    if drop is not None:  # the path names it; the body may leave it out
        required = [name for name in schema.pop("required", []) if name != drop]
        if required:
            schema["required"] = required
        schema["properties"][drop]["description"] = "Optional: defaults to the one in the path."
    return schema


def _null_means_default(schema: Schema) -> None:
    """An optional field may be sent as null: the writer leaves it out of the file
    (a null header value too)."""
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        for option in (field, *field.get("anyOf", ())):  # a map, or a map or null
            values = option.get("additionalProperties")
            if isinstance(values, dict) and isinstance(values.get("type"), str):
                values["type"] = [values["type"], "null"]
        if name in required:
            continue
        options = field.get("anyOf")
        if options is not None and {"type": "null"} not in options:
            field["anyOf"] = [*options, {"type": "null"}]
        elif options is None and "type" in field and "$ref" not in field:
            kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
            if "null" not in kinds:
                field["type"] = [*kinds, "null"]
        elif options is None:  # a sub-model ($ref): its description stays beside the anyOf
            described = {key: field.pop(key) for key in ("description", "title") if key in field}
            schema["properties"][name] = {"anyOf": [field, {"type": "null"}], **described}


def _headers(*names: str) -> Schema:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    # An empty value is a mistake the server reports (400), not "use the default".
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or _t("string", minLength=1, pattern=r"\S"),
    }


def _params(*names: str) -> list[Schema]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


def _path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": _t("string"),
    }


# -- components --------------------------------------------------------------

# Declarative tables, laid out by hand.
# fmt: off
_ERROR = _obj("", "error", "OpenAI's error shape: OpenAI SDKs raise their usual exception classes.",
    error=_obj("message type param:s? code:s?", "message type param code",
        type=_t("string", "`invalid_request_error`, `permission_error`, `server_error`, ..."),
        code=_null("string", "e.g. `invalid_api_key`, `all_providers_exhausted`, `not_found`.")))
_ISSUE = _obj("line:i? message", "path message",
    path=_t("string", "The field's path as spelt in YAML, e.g. `chains[0].entries[2].model`."))
_INVALID_CONFIG = {
    "allOf": [_ref("Error"), _obj("", "", errors=_list_of(_ref("ConfigIssue")))],
    "description": "The whole new config was checked and refused; nothing was written.",
}
_LATENCY = _obj("avg:n? p50:n? p95:n?", "",
                "Milliseconds; `avg` is exact, `p50`/`p95` are estimated from histogram buckets.")
_RANGE = _obj("since_ms:i until_ms:i since:t until:t", "since_ms until_ms since until")
_MEASURES = {"tokens": _ref("Tokens"), "latency_ms": _ref("Latency")}

_REQUEST_ROW = _obj(
    "id time_ms:i time:t key_label:s? chain:s? requested_model:s? provider:s? model:s? status:i"
    " outcome stream:b attempts:i latency_ms:n ttft_ms:n? queued_ms:n prompt_tokens:i?"
    " completion_tokens:i? total_tokens:i? tokens_estimated:b",
    key_label=_null("string", "`key#2`, `admin#1`, `open`: never the key."),
    provider=_null("string", "The entry that answered."),
    outcome=_t("string", "`success`, `client_error`, `all_providers_exhausted`, ..."),
    attempts=_t("integer", "Upstream calls made."),
    ttft_ms=_null("number", "Streams: time to the first token sent."),
    route=_null("string", "Why that chain: `chain` (`model` named it), `model` (an entry "
                "model: every entry serving it), `default`; null in older rows."))
_ATTEMPT = _obj("order:i provider model status:i? latency_ms:n? cooldown_ms:i? reason:s?",
    outcome=_t("string", "Trace token: `200`, `429`, `timeout`, `skip:cooldown`, ..."))

_MESSAGE = _obj("", "role",
    role=_t("string", "`system`, `developer`, `user`, `assistant`, `tool`."),
    content={"type": ["string", "array", "null"]}, tool_calls=_t("array"))
_MESSAGE["additionalProperties"] = True
_TOKENS = _null("integer", minimum=1, maximum=1_000_000)
_CHAT_REQUEST = _obj("", "messages",
    "OpenAI's chat completion request: the fields below are checked here, the others "
    "(`temperature`, `tools`' contents, ...) are the provider's to check. Sent upstream "
    "unchanged except `model`, which becomes the entry's model.",
    model=_t("string", "A chain's name. Any other value uses `settings.defaultChain`; with "
             "`settings.strictModels` it is a 404 `model_not_found`."),
    messages=_t("array", "Non-empty; each item an object.", items=_ref("ChatMessage"), minItems=1),
    stream=_null("boolean", "`true`: the answer is a server-sent event stream."),
    stream_options=_null("object", "Passed on as asked; with `include_usage` the last chunk "
                         "carries usage.", properties={"include_usage": _t("boolean")}),
    tools=_null("array", items=_t("object")), max_tokens=_TOKENS, max_completion_tokens=_TOKENS)
_CHAT_REQUEST["additionalProperties"] = True
_CHAT_COMPLETION = _obj("id created:i", "choices", "The provider's JSON, relayed as it came.",
    object=_const("chat.completion"), model=_t("string", "As the provider reported it."),
    choices=_list_of(_obj("index:i finish_reason:s?", message=_ref("ChatMessage"))),
    usage=_obj("prompt_tokens:i completion_tokens:i total_tokens:i"))

_MODELS = _obj("", "object data", object=_const("list"), data=_list_of(
    _obj("id created:i", "id object", object=_const("model"),
         owned_by=_t("string", "`chain429` for a chain, else the first provider serving it."),
         kind=_t("string", "`chain`, or `model`: an entry model, which selects every entry "
                 "serving it, in config order.", enum=["chain", "model"]),
         providers=_list_of(_t("string"), "`model` only: the providers serving it."))))
_QUOTA = _obj("limit:i? remaining:i? reset_at:t? source:s?",
              kind=_t("string", enum=["requests", "tokens"]),
              window=_t("string", enum=["minute", "hour", "day"]))
_RATELIMITS = _obj("", "object entries buckets blocks", object=_const("ratelimits"),
    entries=_list_of(_obj("chain provider model bucket reason:s? until:t? in_flight:i",
        state=_t("string", enum=["available", "limited", "cooling", "unhealthy", "probing",
                                 "broken"]),
        source=_null("string", "`header`, `body`, `manual`, `status`, `default`."),
        breaker=_obj("failures:i until:t? reason:s?", "state failures until reason",
                     "The entry's circuit breaker (`settings.breaker`): `open` skips it until "
                     "`until`, `half_open` lets one probe through.",
                     state=_t("string", enum=["closed", "open", "half_open"])))),
    buckets=_list_of(_obj("bucket provider in_flight:i", quotas=_list_of(_QUOTA))),
    blocks=_list_of(_obj("until:t?"), "Every block in force."))
_HEALTH = _obj("version uptime_s:n config_generation:i config_loaded_at:n",
    "status version",
    status=_t("string", "`degraded` (still 200) while the file on disk is rejected, the request "
              "log's database fails, or it dropped a record in the last 5 minutes.",
              enum=["ok", "degraded"]),
    config_error=_null("object", "Set while the file on disk is rejected (the running config "
                       "is kept): `rejected_at`, and for admin callers the `errors`.",
                       properties={"rejected_at": _t("number"),
                                   "errors": _list_of(_ref("ConfigIssue"))}),
    log=_obj("dropped:i pending:i last_error:s? written:i", "dropped pending last_error written",
             "The request log, when it is on: records dropped (never to be written), pending "
             "(accepted, not yet committed), the database's last error (null once a write "
             "succeeds again), records written."))

_WRITE_RESULT = _obj("", "generation",
    result=_t("string", "What the edit did, e.g. `created`, `updated`, `deleted`."),
    generation=_t("integer", "The config generation now in force (also the `ETag`)."))
_RELOAD = _obj("generation:i", "reloaded generation",
    reloaded=_t("boolean", "Whether the config changed."),
    errors=_null("array", "Why the reload failed; the running config is kept.",
                 items=_ref("ConfigIssue")))
_TESTED = _list_of(_obj("provider model status:i? latency_ms:n? model_reported:s? reason:s?",
    result=_t("string", "`ok`, or the trace token of the failure."),
    tokens=_obj("prompt:i? completion:i?"),
    text=_null("string", "What the entry answered (at most 2,000 characters).")))
_CHAIN_TEST = _obj("chain stream:b", working=_t("integer", "Entries that answered."),
                   entries=_TESTED)
_PROVIDER_TEST = _obj("provider stream:b", working=_t("integer", "Models that answered."),
                      entries=_TESTED)
_CLEARED = _obj("", "cleared", cleared=_t("integer", "Blocks that were in force and ended."))
_CLEAR_REQUEST = _obj("", "provider",
    "With `model`: that entry's cooldowns (its entry, quota bucket and provider scopes); "
    "without: every block of the provider.",
    provider=_t("string", "A provider's id.", minLength=1),
    model=_t("string", "An entry's model on that provider.", minLength=1))
_CLEAR_REQUEST["additionalProperties"] = False


_HEADERS = {
    "X-Request-Id": ("The request's id in the request log and in every log line about it.", "s"),
    "X-429chain-Chain": ("The chain that served the request (an entry model's name for an "
                         "implicit chain).", "s"),
    "X-429chain-Route": ("Why that chain: `chain`, `model` or `default`.", "s"),
    "X-429chain-Provider": ("`<provider id>/<entry model>` that answered.", "s"),
    "X-429chain-Attempts": ("Upstream calls made (skipped entries are not calls).", "i"),
    "X-429chain-Trace": ("One `<provider id>/<entry model>=<outcome>` per entry considered, "
                         "in chain order; a skip is `skip:<reason>`.", "s"),
    "Retry-After": ("Seconds until the earliest known recovery, when one is known.", "i"),
    "ETag": ('The config generation, quoted (`"7"`); send it back as `If-Match`.', "s"),
}
_MOMENT = {"anyOf": [_t("string", format="date-time"), _t("string", format="date"),
                     _t("string", pattern=r"^\s*\d+\s*[smhd]\s*$")]}
_PARAMETERS: Schema = {
    "since": _query("since", "Start of the range: ISO 8601 (`2026-11-26T10:00:00Z`, "
                    "`2026-11-26`) or an age (`24h`, `7d`, `30m`, `90s`). Default: 24 hours ago.",
                    _MOMENT),
    "until": _query("until", "End of the range, as `since`. Default: now.", _MOMENT),
    "chain": _query("chain", "Only requests of this chain (exact match)."),
    "provider": _query("provider", "Only requests this provider answered (exact match)."),
    "status": _query("status", "Only requests answered with this HTTP status.", _t("integer")),
    "outcome": _query("outcome", "Only requests with this outcome code (exact match)."),
    "limit": _query("limit", "Rows per page.", _t("integer", minimum=1, maximum=1000, default=100)),
    "cursor": _query("cursor", "The previous page's `next_cursor`."),
    "bucket": _query("bucket", "Bucket size. Default: from the range (5m up to 6 h, 1h up to "
                     "7 d, else 1d).", _t("string", enum=["5m", "1h", "1d"])),
    "stream": _query("stream", "Test with streaming calls.", _t("boolean")),
    "MaxWait": {"name": "X-429chain-Max-Wait", "in": "header",
                "description": "Queue mode: wait at most this many seconds for a recovery "
                "(`settings.queueMaxWaitMs` caps it).",
                "schema": _t("string", pattern=MAX_WAIT_PATTERN)},
    "IfMatch": {"name": "If-Match", "in": "header", "schema": _t("string"),
                "description": "The `ETag` last read (or `*`): a write over a newer config "
                "is a 412."},
}
_SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": (
        "`Authorization: Bearer <key>`. Proxy routes take a key of `settings.apiKeys`; admin "
        "reads (stats, config, status, metrics) a key of `settings.adminKeys` or, with none "
        "configured, a proxy key; admin writes (edits, chain tests) an admin key only. A "
        "missing or unknown key is a 401, a key of the wrong kind a 403. With no keys "
        "configured (allowed on loopback only) no key is needed.")},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "The same keys as `bearerAuth`, in an `x-api-key` header."},
}
# OpenAPI 3.1 allows role names in a requirement: they say which kind of key a route takes.
_SECURITY: dict[str, list[Schema]] = {
    "proxy": [{"bearerAuth": ["proxy"]}, {"apiKeyHeader": ["proxy"]}],
    "admin": [{"bearerAuth": ["admin"]}, {"apiKeyHeader": ["admin"]}],
    "server": [],
}
# fmt: on


def _schemas() -> Schema:
    schemas: Schema = {
        "Error": _ERROR,
        "ConfigIssue": _ISSUE,
        "InvalidConfig": _INVALID_CONFIG,
        "ChatMessage": _MESSAGE,
        "ChatCompletionRequest": _CHAT_REQUEST,
        "ChatCompletion": _CHAT_COMPLETION,
        "ModelList": _MODELS,
        "RateLimitReport": _RATELIMITS,
        "Health": _HEALTH,
        "StatsRange": _RANGE,
        "Tokens": _obj("prompt:i completion:i total:i"),
        "Latency": _LATENCY,
        "RequestLogRow": _REQUEST_ROW,
        "WriteResult": _WRITE_RESULT,
    }
    config_defs: Schema = {}  # the config's sub-models (RateLimits, ChainEntry)
    schemas["ProviderConfig"] = _config_schema(Provider, config_defs, drop="id")
    schemas["ChainConfig"] = _config_schema(Chain, config_defs, drop="name")
    settings = _config_schema(Settings, config_defs)
    settings["description"] = "The settings to change (camelCase, as in YAML); others are kept."
    schemas["SettingsPatch"] = settings
    clash = set(config_defs) & set(schemas)
    if clash:  # a config model renamed onto one of the names above
        raise RuntimeError(f"config schema names clash with the document's: {sorted(clash)}")
    return {**schemas, **config_defs}


# -- operations --------------------------------------------------------------

_ERROR_TEXT = {
    401: "Missing or unknown key.",
    403: "A proxy key on an admin route, or a request from a web page whose origin is not "
    "allowed (`origin_not_allowed`).",
    413: "The body is over `settings.maxBodyBytes`.",
    415: "The body's `Content-Type` is not the one this route takes.",
    421: "Without keys (or with `settings.allowedHosts`): `Host` is not a loopback name nor "
    "an allowed host (`misdirected_request`).",
}
_WATERFALL = (
    "X-Request-Id",
    "X-429chain-Chain",
    "X-429chain-Route",
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
        answer["headers"] = _headers(*headers)
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
    security = _SECURITY["admin" if tag in ("stats", "admin") else tag]
    codes = {**({401: _ERROR_TEXT[401]} if security else {}), 421: _ERROR_TEXT[421]}
    codes.update(errors or {})
    if security is _SECURITY["admin"] or body is not None:
        codes.setdefault(403, _ERROR_TEXT[403])
    if body is not None:
        codes.setdefault(413, _ERROR_TEXT[413])
        codes.setdefault(415, _ERROR_TEXT[415])
    responses = {"200": ok if "content" in ok else _answer("The answer.", ok), **(extra or {})}
    for status, text in codes.items():
        responses.setdefault(str(status), _answer(text, _ref("Error"), *headers))
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
    return {"application/json": {"schema": _ref(name)}}


_CHAT_OK = {
    "description": "The provider's answer. With `stream: true`, server-sent events relayed "
    "chunk by chunk (`chat.completion.chunk`), ending with `data: [DONE]`; a stream that dies "
    "mid-answer ends with an error event (`stream_stalled`, `stream_interrupted`, "
    "`stream_too_long`) instead.",
    "headers": _headers(*_WATERFALL),
    "content": {
        "application/json": {"schema": _ref("ChatCompletion")},
        "text/event-stream": {
            "schema": _obj(
                "data event id",
                "data",
                "One server-sent event (`Cache-Control: no-cache`); its `data` is a "
                "`chat.completion.chunk` as JSON, `[DONE]` at the end, or an `error` object.",
            ),
            "example": 'data: {"object": "chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
        },
    },
}
_CHAT = _op(
    "createChatCompletion",
    "proxy",
    "A chat completion, answered by the first entry of the chain that works",
    _CHAT_OK,
    description="`model` names a chain. docs/api.md says what each upstream answer does.",
    parameters=_params("MaxWait"),
    body=_json_body("ChatCompletionRequest"),
    errors={
        400: "Invalid request, before any provider is asked; or the provider's own 400, "
        "relayed unchanged (the request itself is wrong).",
        404: "With `settings.strictModels`: `model` names no chain (`model_not_found`).",
        422: "The provider's 422, relayed unchanged.",
        503: "Every entry failed or is cooling down (`all_providers_exhausted`), or queue mode "
        "gave up (`queue_timeout`, `queue_full`, `queue_shutdown`).",
    },
    headers=(*_WATERFALL, "Retry-After"),
)


def _stats(op_id: str, summary: str, kind: str, row: Schema, *params: str, **more: Any) -> Schema:
    """A `/v1/stats/*` list answer: the range, then one row per provider, chain or bucket."""
    body = _obj("", "object data", object=_const(kind), data=_list_of(row), **more)
    return _op(
        op_id,
        "stats",
        summary,
        {"allOf": [_ref("StatsRange"), body]},
        parameters=_params("since", "until", *params),
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
        _answer("Written and in force.", _ref("WriteResult"), "ETag"),
        description="The whole new config is validated, written atomically (comments and "
        "`${VAR}` references kept), then swapped in.",
        parameters=[*path, *_params("IfMatch")],
        body=_json_body(body) if body else None,
        errors={
            400: "The body is not a JSON object, or names another id than the path.",
            404: "No such provider or chain.",
            409: "Started without a config file, or the edit conflicts with the config.",
        },
        extra={
            "412": _answer("`If-Match` names an older generation.", _ref("Error"), "ETag"),
            "422": _answer("The new config is invalid.", _ref("InvalidConfig"), "ETag"),
        },
    )


_YAML_BODY = {
    media: {"schema": _t("string", "A chain429 or 429chain config file.")}
    for media in ("application/yaml", "text/yaml")
}
_PROVIDER_ID = [_path_param("provider_id", "The provider's id.")]
_CHAIN_NAME = [_path_param("name", "The chain's name.")]
_REQUEST_ID = [_path_param("request_id", "The request's id (its `X-Request-Id`).")]
_METRICS_OK = {
    "description": "Prometheus text format.",
    "content": {"text/plain; version=0.0.4": {"schema": _t("string")}},
}
_VALIDATE_FAILED = _obj(
    "", "valid errors", valid=_t("boolean", const=False), errors=_list_of(_ref("ConfigIssue"))
)
_SUMMARY = _obj("requests:i successes:i errors:i error_rate:n attempts:i", **_MEASURES)
_PROVIDER_ROW = _obj(
    "provider:s? requests:i successes:i errors:i",
    **_MEASURES,
    attempts=_obj("calls:i skips:i", outcomes=_t("object")),
)
_CHAIN_ROW = _obj("chain:s? requests:i successes:i errors:i error_rate:n", **_MEASURES)
_BUCKET_ROW = _obj("start_ms:i start:t requests:i errors:i", **_MEASURES)
_REQUEST_FILTERS = ("chain", "provider", "status", "outcome", "limit", "cursor")
_STATUS = _obj(
    "config_path:s? generation:i loaded_at:n last_reload_at:n? last_error_at:n?",
    last_error=_null("array", "Why the file on disk is rejected.", items=_ref("ConfigIssue")),
    access=_obj(
        "label write:b",
        "label write",
        "The caller: its label (`admin#1`, `key#2`, `open`) and whether it may edit.",
    ),
)


def _probe_ok(schema: Schema) -> Schema:
    """A test's answer: JSON at the end, or each entry live as server-sent events."""
    answer = _answer("Each entry's result.", schema, "ETag")
    answer["content"]["text/event-stream"] = {
        "schema": _t(
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
    location = {"Location": {"schema": _t("string")}}
    found = {"302": {"description": "To `/ui/`.", "headers": location}}
    op = _op(operation_id, "server", "Redirect to the web UI", _t("object"), extra=found)
    del op["responses"]["200"]
    return op


_PATHS: Schema = {}


def _route(method: str, path: str, op: Schema) -> None:
    _PATHS.setdefault(path, {})[method] = op


# A table, aligned by hand: one route a line where it fits.
# fmt: off
_route("get", "/health", _op("getHealth", "server", "Liveness and config state", _ref("Health")))
_route("get", "/metrics", _op(
    "getMetrics", "server", "Prometheus metrics", _METRICS_OK,
    description="Needs an admin key unless `settings.metricsPublic: true`.",
    errors={401: _ERROR_TEXT[401], 403: _ERROR_TEXT[403]}))
_PATHS["/metrics"]["get"]["security"] = [*_SECURITY["admin"], {}]  # {}: with metricsPublic
_route("get", OPENAPI_PATH, _op("getOpenAPI", "server", "This document", _t("object")))
_route("get", "/v1/models", _op("listModels", "proxy", "Chains, then entry models",
                                _ref("ModelList")))
_route("get", "/v1/ratelimits", _op("getRateLimits", "proxy", "Entry and bucket states",
                                    _ref("RateLimitReport")))
_route("post", "/v1/chat/completions", _CHAT)

_route("get", "/v1/stats/summary", _op(
    "statsSummary", "stats", "Totals over the range",
    {"allOf": [_ref("StatsRange"), _SUMMARY]},
    parameters=_params("since", "until"), errors=_STATS_ERRORS))
_route("get", "/v1/stats/providers", _stats(
    "statsProviders", "Per provider: requests answered, attempts by outcome",
    "stats.providers", _PROVIDER_ROW))
_route("get", "/v1/stats/chains", _stats(
    "statsChains", "Per chain: requests, errors, tokens, latency", "stats.chains", _CHAIN_ROW))
_route("get", "/v1/stats/providers/{provider_id}", _op(
    "statsProvider", "stats", "One provider's row (429chain's path)",
    {"allOf": [_ref("StatsRange"), _PROVIDER_ROW]},
    parameters=[*_PROVIDER_ID, *_params("since", "until")],
    errors={**_STATS_ERRORS, 404: "Nothing logged for it in the range (`not_found`)."}))
_route("get", "/v1/stats/chains/{chain_name}", _op(
    "statsChain", "stats", "One chain's row (429chain's path)",
    {"allOf": [_ref("StatsRange"), _CHAIN_ROW]},
    parameters=[_path_param("chain_name", "The chain's name."), *_params("since", "until")],
    errors={**_STATS_ERRORS, 404: "Nothing logged for it in the range (`not_found`)."}))
_route("get", "/v1/stats/timeseries", _stats(
    "statsTimeseries", "Per UTC-aligned time bucket, empty ones included", "stats.timeseries",
    _BUCKET_ROW, "bucket", bucket=_t("string"), bucket_ms=_t("integer")))
_route("get", "/v1/stats/requests", _stats(
    "statsRequests", "Logged requests, newest first, a page at a time", "list",
    _ref("RequestLogRow"), *_REQUEST_FILTERS, has_more=_t("boolean"),
    next_cursor=_null("string", "Pass as `cursor` for the next page; null at the end.")))
_route("get", "/v1/stats/requests/{request_id}", _op(
    "statsRequest", "stats", "One request and its attempt trail in order",
    {"allOf": [_ref("RequestLogRow"), _obj(trail=_list_of(_ATTEMPT))]},
    parameters=_REQUEST_ID,
    errors={**_STATS_ERRORS, 404: "No such request in the log (`not_found`)."}))

_route("get", "/v1/admin/config", _op(
    "getConfig", "admin", "The config file, secrets masked",
    _answer("The config in force.", _obj("generation:i path:s? config:o"), "ETag")))
_route("put", "/v1/admin/providers/{provider_id}", _admin_write(
    "putProvider", "Add or replace a provider", _PROVIDER_ID, "ProviderConfig"))
_route("delete", "/v1/admin/providers/{provider_id}", _admin_write(
    "deleteProvider", "Delete a provider", _PROVIDER_ID, None))
_route("put", "/v1/admin/chains/{name}", _admin_write(
    "putChain", "Add or replace a chain", _CHAIN_NAME, "ChainConfig"))
_route("delete", "/v1/admin/chains/{name}", _admin_write(
    "deleteChain", "Delete a chain", _CHAIN_NAME, None))
_route("patch", "/v1/admin/settings", _admin_write(
    "patchSettings", "Change some settings", [], "SettingsPatch"))
_route("post", "/v1/admin/validate", _op(
    "validateConfig", "admin", "Check a whole config file without using it",
    _obj("", "valid", valid=_t("boolean", const=True)),
    body=_YAML_BODY,
    extra={"422": _answer("Invalid: every problem found.", _VALIDATE_FAILED)}))
_route("post", "/v1/admin/diff", _op(
    "diffConfig", "admin", "What would change from the running config to this YAML",
    _answer("The semantic diff, summary lines and a unified diff.", _obj(
        "valid:b same:b generation:i diff:o unified", "valid same diff",
        summary=_list_of(_t("string"), "One line per change.")), "ETag"),
    body=_YAML_BODY,
    extra={"422": _answer("Invalid: every problem found.", _VALIDATE_FAILED)}))
_route("post", "/v1/admin/reload", _op(
    "reloadConfig", "admin", "Read the config file again now",
    _answer("Reloaded, or unchanged.", _RELOAD, "ETag"),
    extra={"422": _answer("The file is invalid; the running config is kept.", _RELOAD, "ETag")}))
_route("get", "/v1/admin/status", _op(
    "getAdminStatus", "admin", "The config file, generation and last reload",
    _answer("The reloader's state.", _STATUS, "ETag")))
_route("get", "/v1/admin/diff", _op(
    "diffFile", "admin", "What a reload would change: the config file against the running config",
    _answer("The semantic diff, summary lines and a unified diff.", _obj(
        "valid:b same:b generation:i diff:o unified", "valid same diff",
        summary=_list_of(_t("string"), "One line per change.")), "ETag"),
    errors={409: "Started without a config file (`no_config_file`)."},
    extra={"422": _answer("The file is invalid: every problem found.", _VALIDATE_FAILED)}))
_route("post", "/v1/admin/limits/clear", _op(
    "clearLimits", "admin", "End an entry's or a provider's cooldowns now",
    _CLEARED, description="The entries are asked again at once, without a probe, and their "
    "quota buckets' back-off starts over. `chain429 limits clear` does the same.",
    body={"application/json": {"schema": _CLEAR_REQUEST}},
    errors={400: "A field is missing, empty or unknown (`param` names it).",
            404: "No such provider, or no chain entry with that model (`not_found`)."}))
_route("post", "/v1/test/chain/{name}", _op(
    "testChain", "admin", "Call every entry of a chain once, with a tiny request",
    _probe_ok(_CHAIN_TEST),
    parameters=[*_CHAIN_NAME, *_params("stream")],
    errors={400: "`stream` is not true or false.", 404: "No such chain (`not_found`)."}))
_route("post", "/v1/test/provider/{provider_id}", _op(
    "testProvider", "admin", "Call each model a provider serves in a chain once",
    _probe_ok(_PROVIDER_TEST), parameters=[*_PROVIDER_ID, *_params("stream")],
    errors={400: "`stream` is not true or false.", 404: "No such provider (`not_found`)."}))

# The web UI (chain429.server.web_ui): no key, no data.
_route("get", "/", _redirect_to_ui("webUiRoot"))
_route("get", "/ui", _redirect_to_ui("webUiBare"))
_route("get", "/ui/", _op(
    "webUi", "server", "The web UI (docs/ui.md)",
    {"description": "Its page, with a strict Content-Security-Policy and an `ETag`.",
     "content": {"text/html": {"schema": _t("string")}}}, extra=_NOT_MODIFIED))
_route("get", "/ui/{path}", _op(
    "webUiFile", "server", "One file of the web UI",
    {"description": "The file, with a strict Content-Security-Policy and an `ETag`.",
     "content": {kind: {"schema": _t("string")} for kind in _UI_FILE_TYPES}},
    parameters=[{"name": "path", "in": "path", "required": True,
                 "description": "The file's path under /ui/ (a slash may be sent as `%2F`).",
                 "schema": _t("string", enum=sorted(assets()))}],
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
        "schemas": _schemas(),
        "parameters": _PARAMETERS,
        "headers": {
            n: {"description": d, "schema": _t(_KINDS[k])} for n, (d, k) in _HEADERS.items()
        },
        "securitySchemes": _SECURITY_SCHEMES,
    },
}

# -- serving -----------------------------------------------------------------


def openapi_path(sanic_path: str) -> str:
    """Sanic's `/a/<name:str>` as OpenAPI's `/a/{name}`."""
    path = _SANIC_PARAM.sub(r"{\1}", sanic_path)
    return path if path.startswith("/") else f"/{path}"


def app_operations(app: Sanic) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app has, HEAD and OPTIONS aside."""
    return {
        (method.lower(), openapi_path(route.path))
        for route in app.router.routes
        for method in route.methods
        if method not in ("HEAD", "OPTIONS")
    }


def document_for(app: Sanic) -> Schema:
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


def register_openapi_route(app: Sanic) -> None:
    """Add `GET /openapi.json`: public, no key; the bytes are built once, on first use."""
    built: list[bytes] = []

    @app.get(OPENAPI_PATH)
    async def openapi_document(request: Request) -> HTTPResponse:
        if not built:  # by the first request every route is registered
            built.append(json.dumps(document_for(app), indent=1).encode())
        return raw(built[0], 200, None, "application/json")
