"""The building blocks of the OpenAPI document: schema helpers and shared components.

`openapi.py` writes the operations with these. Kept apart so each file reads
as one thing: here, what the bodies look like; there, which route answers what.
The provider, chain and settings bodies come from the config models themselves
(`config_schema`), so they cannot drift from what the config loader accepts.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from chain429.config.model import CHAIN_KINDS, Chain, Client, Provider, Settings
from chain429.config.schema import model_schema
from chain429.requestlog.records import REQUEST_OUTCOMES
from chain429.routing.endpoints import ROUTE, Endpoint
from chain429.server.completions import MAX_WAIT_PATTERN
from chain429.server.ratelimit_report import EntryState

Schema = dict[str, Any]

# -- schema helpers ----------------------------------------------------------

KINDS = {
    "s": "string",
    "i": "integer",
    "n": "number",
    "b": "boolean",
    "o": "object",
    "t": "string",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def typed(kind: str | list[str], description: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if description:
        schema["description"] = description
    return schema


def nullable(kind: str, description: str | None = None, **extra: Any) -> Schema:
    return typed([kind, "null"], description, **extra)


def list_of(item: Schema, description: str | None = None, **extra: Any) -> Schema:
    return typed("array", description, items=item, **extra)


def obj(spec: str = "", required: str = "", description: str = "", /, **fields: Schema) -> Schema:
    """A loosely typed object (more fields may come): `spec` lists `name:kind` fields.

    Kinds: s(tring, the default), i(nteger), n(umber), b(oolean), o(bject),
    t (ISO 8601 date-time); a trailing `?` allows null. `fields` add schemas.
    """
    properties: Schema = {}
    for token in spec.split():
        name, _, kind = token.partition(":")
        code = kind.rstrip("?") or "s"
        schema = typed(KINDS[code], format="date-time") if code == "t" else typed(KINDS[code])
        if kind.endswith("?"):
            schema["type"] = [schema["type"], "null"]
        properties[name] = schema
    schema = {"type": "object", "properties": {**properties, **fields}}
    if required:
        schema["required"] = required.split()
    if description:
        schema["description"] = description
    return schema


def const(value: str) -> Schema:
    return typed("string", const=value)


def config_schema(model: type[BaseModel], schemas: Schema, drop: str | None = None) -> Schema:
    """A config model's JSON Schema (camelCase, as in YAML, with the descriptions of
    docs/config.md); its sub-models join `schemas`."""
    schema = model_schema(model, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    for found in (schema, *defs.values()):
        null_means_default(found)
    schemas.update(defs)
    if drop is not None:  # the path names it; the body may leave it out
        required = [name for name in schema.pop("required", []) if name != drop]
        if required:
            schema["required"] = required
        schema["properties"][drop]["description"] = "Optional: defaults to the one in the path."
    return schema


def null_means_default(schema: Schema) -> None:
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


def header_refs(*names: str) -> Schema:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def query_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    # An empty value is a mistake the server reports (400), not "use the default".
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or typed("string", minLength=1, pattern=r"\S"),
    }


def param_refs(*names: str) -> list[Schema]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


def path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": typed("string"),
    }


# -- components --------------------------------------------------------------

# Declarative tables, laid out by hand.
# fmt: off
ERROR = obj("", "error", "OpenAI's error shape: OpenAI SDKs raise their usual exception classes.",
    error=obj("message type param:s? code:s?", "message type param code",
        type=typed("string", "`invalid_request_error`, `permission_error`, `server_error`, ..."),
        code=nullable("string", "e.g. `invalid_api_key`, `all_providers_exhausted`, `not_found`.")))
ISSUE = obj("line:i? message", "path message",
    path=typed("string", "The field's path as spelt in YAML, e.g. `chains[0].entries[2].model`."))
INVALID_CONFIG = {
    "allOf": [ref("Error"), obj("", "", errors=list_of(ref("ConfigIssue")))],
    "description": "The whole new config was checked and refused; nothing was written.",
}
LATENCY = obj("avg:n? p50:n? p95:n?", "",
                "Milliseconds; `avg` is exact, `p50`/`p95` are estimated from histogram buckets.")
RANGE = obj("since_ms:i until_ms:i since:t until:t", "since_ms until_ms since until",
    endpoint=typed("string", "With the `endpoint` filter: the route counted.",
                   enum=list(Endpoint)))
MEASURES = {"tokens": ref("Tokens"), "latency_ms": ref("Latency")}

REQUEST_ROW = obj(
    "id time_ms:i time:t key_label:s? client:s? chain:s? requested_model:s? provider:s? model:s?"
    " status:i"
    " outcome stream:b attempts:i latency_ms:n ttft_ms:n? queued_ms:n prompt_tokens:i?"
    " completion_tokens:i? total_tokens:i? tokens_estimated:b cost_estimated:b",
    key_label=nullable("string", "`key#2`, `admin#1`, `client:alice`, `open`: never the key."),
    client=nullable("string", "The `clients:` entry whose key sent it; null for `apiKeys`, "
                    "keyless and refused requests."),
    provider=nullable("string", "The entry that answered."),
    outcome=typed("string", "`success`, `client_error`, `all_providers_exhausted`, ..."),
    attempts=typed("integer", "Upstream calls made."),
    ttft_ms=nullable("number", "Streams: time to the first token sent."),
    cost_usd=nullable("number", "What the answer cost in US dollars, from its tokens at its "
                   "entry's `price`; null when unpriced. `cost_estimated`: from estimated "
                   "tokens."),
    route=nullable("string", "Why that chain: `chain` (`model` named it), `alias` (`model` is "
                "an alias of it: `requested_model` says which), `model` (an entry model: every "
                "entry serving it), `default`; null in older rows."),
    endpoint=typed("string", "The proxied route: `chat` (/v1/chat/completions), `completions` "
                "(/v1/completions), `embeddings` (/v1/embeddings); `chat` in older rows.",
                enum=list(Endpoint)))
ATTEMPT = obj("order:i provider model status:i? latency_ms:n? cooldown_ms:i? reason:s?",
    outcome=typed("string", "Trace token: `200`, `429`, `timeout`, `skip:cooldown`, ..."))

MESSAGE = obj("", "role",
    role=typed("string", "`system`, `developer`, `user`, `assistant`, `tool`."),
    content={"type": ["string", "array", "null"]}, tool_calls=typed("array"))
MESSAGE["additionalProperties"] = True
TOKENS = nullable("integer", minimum=1, maximum=1_000_000)
CHAT_REQUEST = obj("", "messages",
    "OpenAI's chat completion request: the fields below are checked here, the others "
    "(`temperature`, `tools`' contents, ...) are the provider's to check. Sent upstream "
    "unchanged except `model`, which becomes the entry's model.",
    model=typed("string", "A chain's name, an alias of one (`aliases`), or an entry model. Any "
             "other value uses `settings.defaultChain`; with `settings.strictModels` it is a "
             "404 `model_not_found`."),
    messages=typed("array", "Non-empty; each item an object.", items=ref("ChatMessage"),
                   minItems=1),
    stream=nullable("boolean", "`true`: the answer is a server-sent event stream."),
    stream_options=nullable("object", "Passed on as asked; with `include_usage` the last chunk "
                         "carries usage.", properties={"include_usage": typed("boolean")}),
    tools=nullable("array", items=typed("object")), max_tokens=TOKENS, max_completion_tokens=TOKENS)
CHAT_REQUEST["additionalProperties"] = True
CHAT_COMPLETION = obj("id created:i", "choices", "The provider's JSON, relayed as it came.",
    object=const("chat.completion"), model=typed("string", "As the provider reported it."),
    choices=list_of(obj("index:i finish_reason:s?", message=ref("ChatMessage"))),
    usage=obj("prompt_tokens:i completion_tokens:i total_tokens:i"))
# A legacy `prompt` or an embedding `input`: text, texts, token ids, or lists of them.
TOKEN_IDS = list_of(typed("integer", minimum=0), minItems=1)
TEXT_OR_TOKENS = {"anyOf": [typed("string"), list_of(typed("string"), minItems=1), TOKEN_IDS,
                            list_of(TOKEN_IDS, minItems=1)]}
COMPLETION_REQUEST = obj("", "prompt",
    "OpenAI's legacy completion request: `prompt`, `model`, `stream`, `stream_options` and "
    "the token counts are checked here, the rest is the provider's. Sent to each entry's "
    "`/completions` unchanged except `model`.",
    model=typed("string", "A chat chain's name (or an entry model of one); any other value "
             "uses `settings.defaultChain` if it is a chat chain."),
    prompt=TEXT_OR_TOKENS,
    stream=nullable("boolean", "`true`: the answer is a server-sent event stream."),
    stream_options=nullable("object", "Passed on as asked.",
                            properties={"include_usage": typed("boolean")}),
    max_tokens=TOKENS)
COMPLETION_REQUEST["additionalProperties"] = True
COMPLETION = obj("id created:i", "choices", "The provider's JSON, relayed as it came.",
    object=const("text_completion"), model=typed("string", "As the provider reported it."),
    choices=list_of(obj("index:i text finish_reason:s?")),
    usage=obj("prompt_tokens:i completion_tokens:i total_tokens:i"))
NON_EMPTY_TEXT = {"anyOf": [typed("string", minLength=1),
                            list_of(typed("string", minLength=1), minItems=1), TOKEN_IDS,
                            list_of(TOKEN_IDS, minItems=1)]}
EMBEDDING_REQUEST = obj("", "input",
    "OpenAI's embeddings request: sent to each entry's `/embeddings` unchanged except `model`.",
    model=typed("string", "An embeddings chain's name (or an entry model of one); any other "
             "value uses `settings.defaultChain` if it is an embeddings chain."),
    input=NON_EMPTY_TEXT,
    encoding_format=nullable("string", "`base64` (what OpenAI's SDKs ask for) or `float`.",
                             enum=["float", "base64", None]),
    dimensions=nullable("integer", minimum=1))
EMBEDDING_REQUEST["additionalProperties"] = True
EMBEDDING_LIST = obj("model", "data", "The provider's JSON, relayed as it came.",
    object=const("list"),
    data=list_of(obj("index:i", object=const("embedding"), embedding={
        "type": ["array", "string"], "items": typed("number"),
        "description": "The vector; a base64 string of little-endian float32 with "
        "`encoding_format: base64`."})),
    usage=obj("prompt_tokens:i total_tokens:i"))

MODELS = obj("", "object data", object=const("list"), data=list_of(
    obj("id created:i", "id object", object=const("model"),
         owned_by=typed("string", "`chain429` for a chain, else the first provider serving it."),
         kind=typed("string", "`chain`; `alias`: another name of the chain in `chain`; or "
                 "`model`: an entry model, which selects every entry serving it, in config "
                 "order.", enum=["chain", "alias", "model"]),
         chain=typed("string", "`alias` only: the chain it names."),
         chain_kind=typed("string", "What it serves: `chat` or `embeddings` (the chain's "
                       "`kind`).", enum=list(CHAIN_KINDS)),
         endpoints=list_of(typed("string", enum=list(ROUTE.values())),
                           "The routes that take it as `model`."),
         providers=list_of(typed("string"), "`model` only: the providers serving it."))))
QUOTA = obj("limit:i? remaining:i? reset_at:t? source:s?",
              kind=typed("string", enum=["requests", "tokens"]),
              window=typed("string", enum=["minute", "hour", "day"]))
PAUSE = obj("provider model:s? since:t by", "scope provider model since by",
    "A person's pause (`chain429 entry pause`): skipped (`skip:paused`) until resumed.",
    scope=typed("string", "`provider`: every entry of it; `entry`: that one.",
                enum=["provider", "entry"]),
    by=typed("string", "The label of the key that paused it (`admin#1`, `open`)."))
RATELIMITS = obj("", "object entries buckets blocks paused", object=const("ratelimits"),
    entries=list_of(obj("chain provider model bucket reason:s? until:t? in_flight:i",
        state=typed("string", enum=list(get_args(EntryState))),
        source=nullable("string", "`header`, `body`, `manual`, `status`, `default`, `pause`."),
        paused={"anyOf": [ref("Pause"), typed("null")],
                "description": "The pause that stops it (its provider's or its own), if any."},
        breaker=obj("failures:i until:t? reason:s?", "state failures until reason",
                    "The entry's circuit breaker (`settings.breaker`): `open` skips it until "
                    "`until`, `half_open` lets one probe through.",
                    state=typed("string", enum=["closed", "open", "half_open"])))),
    buckets=list_of(obj("bucket provider in_flight:i", quotas=list_of(QUOTA))),
    blocks=list_of(obj("until:t?"), "Every block in force."),
    paused=list_of(ref("Pause"), "Every pause in force."))
HEALTH = obj("version uptime_s:n config_generation:i config_loaded_at:n",
    "status version",
    status=typed("string", "`degraded` (still 200) while the file on disk is rejected, the request "
              "log's database fails, it dropped a record in the last 5 minutes, or the shared "
              "state store (Redis) is unreachable.",
              enum=["ok", "degraded"]),
    state_store=obj("reason:s?", "kind status reason failure_mode",
                    "With `settings.stateStore` (docs/scaling.md): whether Redis answers, why not, "
                    "and what this instance does meanwhile (`open`: serves on its own limits; "
                    "`closed`: refuses with 503).",
                    kind=typed("string", enum=["redis"]),
                    status=typed("string", enum=["ok", "unavailable"]),
                    failure_mode=typed("string", enum=["open", "closed"])),
    config_error=nullable("object", "Set while the file on disk is rejected (the running config "
                       "is kept): `rejected_at`, and for admin callers the `errors`.",
                       properties={"rejected_at": typed("number"),
                                   "errors": list_of(ref("ConfigIssue"))}),
    log=obj("dropped:i pending:i last_error:s? written:i", "dropped pending last_error written",
             "The request log, when it is on: records dropped (never to be written), pending "
             "(accepted, not yet committed), the database's last error (null once a write "
             "succeeds again), records written."))

WRITE_RESULT = obj("", "generation",
    result=typed("string", "What the edit did, e.g. `created`, `updated`, `deleted`."),
    generation=typed("integer", "The config generation now in force (also the `ETag`)."))
RELOAD = obj("generation:i", "reloaded generation",
    reloaded=typed("boolean", "Whether the config changed."),
    errors=nullable("array", "Why the reload failed; the running config is kept.",
                 items=ref("ConfigIssue")))
TESTED = list_of(obj("provider model status:i? latency_ms:n? model_reported:s? reason:s?",
    result=typed("string", "`ok`, or the trace token of the failure."),
    tokens=obj("prompt:i? completion:i?"),
    text=nullable("string", "What the entry answered (at most 2,000 characters).")))
CHAIN_TEST = obj("chain stream:b", working=typed("integer", "Entries that answered."),
                   entries=TESTED)
PROVIDER_TEST = obj("provider stream:b", working=typed("integer", "Models that answered."),
                      entries=TESTED)
CLEARED = obj("", "cleared", cleared=typed("integer", "Blocks that were in force and ended."))
CLEAR_REQUEST = obj("", "provider",
    "With `model`: that entry's cooldowns (its entry, quota bucket and provider scopes); "
    "without: every block of the provider.",
    provider=typed("string", "A provider's id.", minLength=1),
    model=typed("string", "An entry's model on that provider.", minLength=1))
CLEAR_REQUEST["additionalProperties"] = False
ALIAS_BODY = obj("", "chain", "What the alias names (the config's `aliases`).",
    chain=typed("string", "A chain's name.", minLength=1))
ALIAS_BODY["additionalProperties"] = False
PAUSE_REQUEST = obj("", "provider",
    "With `model`: that entry; without: the whole provider.",
    provider=typed("string", "A provider's id.", minLength=1),
    model=typed("string", "An entry's model on that provider.", minLength=1))
PAUSE_REQUEST["additionalProperties"] = False
PAUSED = obj("", "paused new", paused=ref("Pause"),
    new=typed("boolean", "False when it was paused already (the first pause is kept)."))
RESUMED = obj("", "resumed provider_paused",
    resumed=typed("integer", "Pauses that ended: for a provider, its own and its entries'."),
    provider_paused=typed("boolean", "For an entry: its provider is still paused as a whole, "
                          "so the entry is still skipped."))


HEADERS = {
    "X-Request-Id": ("The request's id in the request log and in every log line about it.", "s"),
    "X-429chain-Chain": ("The chain that served the request (an entry model's name for an "
                         "implicit chain).", "s"),
    "X-429chain-Route": ("Why that chain: `chain`, `alias`, `model` or `default`.", "s"),
    "X-429chain-Alias": ("The alias the request named (`aliases:`), when it came by one.", "s"),
    "X-429chain-Provider": ("`<provider id>/<entry model>` that answered.", "s"),
    "X-429chain-Attempts": ("Upstream calls made (skipped entries are not calls).", "i"),
    "X-429chain-Trace": ("One `<provider id>/<entry model>=<outcome>` per entry considered, "
                         "in chain order; a skip is `skip:<reason>`.", "s"),
    "X-429chain-Client": ("The client (`clients:` name) whose key sent the request; absent for "
                          "`apiKeys` and keyless requests.", "s"),
    "Retry-After": ("Seconds until the earliest known recovery, when one is known.", "i"),
    "retry-after-ms": ("The same wait in milliseconds, for OpenAI's SDKs.", "i"),
    "ETag": ('The config generation, quoted (`"7"`); send it back as `If-Match`.', "s"),
}
MOMENT = {"anyOf": [typed("string", format="date-time"), typed("string", format="date"),
                     typed("string", pattern=r"^\s*\d+\s*[smhd]\s*$")]}
PARAMETERS: Schema = {
    "since": query_param("since", "Start of the range: ISO 8601 (`2026-11-26T10:00:00Z`, "
                    "`2026-11-26`) or an age (`24h`, `7d`, `30m`, `90s`). Default: 24 hours ago.",
                    MOMENT),
    "until": query_param("until", "End of the range, as `since`. Default: now.", MOMENT),
    "chain": query_param("chain", "Only requests of this chain (exact match)."),
    "provider": query_param("provider", "Only requests this provider answered (exact match)."),
    "status": query_param("status", "Only requests answered with this HTTP status.",
                          typed("integer", minimum=0, maximum=999)),
    "outcome": query_param("outcome", "Only requests with this outcome.",
                           typed("string", enum=list(REQUEST_OUTCOMES))),
    "endpoint": query_param("endpoint", "Only requests of this proxied route.",
                            typed("string", enum=list(Endpoint))),
    "client": query_param("client", "Only requests of this client (its `clients:` name); "
                          "`-`: those sent without a client key."),
    "limit": query_param("limit", "Rows per page.",
                         typed("integer", minimum=1, maximum=1000, default=100)),
    "cursor": query_param("cursor", "The previous page's `next_cursor`."),
    "by": query_param("by", "What to total the spend by. Default: `provider`.",
                      typed("string", enum=["provider", "chain", "client"])),
    "bucket": query_param("bucket", "Bucket size. Default: from the range (5m up to 6 h, 1h up to "
                     "7 d, else 1d).", typed("string", enum=["5m", "1h", "1d"])),
    "stream": query_param("stream", "Test with streaming calls.", typed("boolean")),
    "MaxWait": {"name": "X-429chain-Max-Wait", "in": "header",
                "description": "Queue mode: wait at most this many seconds for a recovery "
                "(`settings.queueMaxWaitMs` caps it).",
                "schema": typed("string", pattern=MAX_WAIT_PATTERN)},
    "IfMatch": {"name": "If-Match", "in": "header", "schema": typed("string"),
                "description": "The `ETag` last read (or `*`): a write over a newer config "
                "is a 412."},
}
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": (
        "`Authorization: Bearer <key>`. Proxy routes take a key of `settings.apiKeys` or a "
        "client's key (`clients:`, which names the caller); admin reads (stats, config, status, "
        "metrics) a key of `settings.adminKeys` or, with none configured, an `apiKeys` key "
        "(never a client's); admin writes (edits, chain tests) an admin key only. A "
        "missing or unknown key is a 401, a key of the wrong kind a 403. With no keys "
        "configured (allowed on loopback only) no key is needed.")},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "The same keys as `bearerAuth`, in an `x-api-key` header."},
}
# OpenAPI 3.1 allows role names in a requirement: they say which kind of key a route takes.
SECURITY: dict[str, list[Schema]] = {
    "proxy": [{"bearerAuth": ["proxy"]}, {"apiKeyHeader": ["proxy"]}],
    "admin": [{"bearerAuth": ["admin"]}, {"apiKeyHeader": ["admin"]}],
    "server": [],
}
# fmt: on


def component_schemas() -> Schema:
    schemas: Schema = {
        "Error": ERROR,
        "ConfigIssue": ISSUE,
        "InvalidConfig": INVALID_CONFIG,
        "ChatMessage": MESSAGE,
        "ChatCompletionRequest": CHAT_REQUEST,
        "ChatCompletion": CHAT_COMPLETION,
        "CompletionRequest": COMPLETION_REQUEST,
        "Completion": COMPLETION,
        "EmbeddingRequest": EMBEDDING_REQUEST,
        "EmbeddingList": EMBEDDING_LIST,
        "ModelList": MODELS,
        "RateLimitReport": RATELIMITS,
        "Pause": PAUSE,
        "Health": HEALTH,
        "StatsRange": RANGE,
        "Tokens": obj("prompt:i completion:i total:i"),
        "Latency": LATENCY,
        "RequestLogRow": REQUEST_ROW,
        "WriteResult": WRITE_RESULT,
        "AliasConfig": ALIAS_BODY,
    }
    config_defs: Schema = {}  # the config's sub-models (RateLimits, ChainEntry)
    schemas["ProviderConfig"] = config_schema(Provider, config_defs, drop="id")
    schemas["ChainConfig"] = config_schema(Chain, config_defs, drop="name")
    client = config_schema(Client, config_defs, drop="name")
    # Over the API a key is only ever named, never sent (chain429.server.client_routes).
    client["properties"]["key"] = nullable(
        "string",
        "A `${VAR}` reference to the key, set in the server's environment or the `.env` beside "
        "its config. Required for a new client; left out of a replace (or null), the key is "
        "kept.",
        pattern=r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$",
    )
    client.pop("required", None)  # `name` comes from the path, `key` may be kept
    schemas["ClientConfig"] = client
    settings = config_schema(Settings, config_defs)
    settings["description"] = "The settings to change (camelCase, as in YAML); others are kept."
    schemas["SettingsPatch"] = settings
    clash = set(config_defs) & set(schemas)
    if clash:  # a config model renamed onto one of the names above
        raise RuntimeError(f"config schema names clash with the document's: {sorted(clash)}")
    return {**schemas, **config_defs}


# -- bodies of the admin and stats routes ------------------------------------------

VALIDATE_FAILED = obj(
    "", "valid errors", valid=typed("boolean", const=False), errors=list_of(ref("ConfigIssue"))
)
SUMMARY = obj("requests:i successes:i errors:i error_rate:n attempts:i", **MEASURES)
PROVIDER_ROW = obj(
    "provider:s? requests:i successes:i errors:i",
    **MEASURES,
    attempts=obj("calls:i skips:i", outcomes=typed("object")),
)
CHAIN_ROW = obj("chain:s? requests:i successes:i errors:i error_rate:n", **MEASURES)
ENDPOINT_ROW = obj(
    "requests:i successes:i errors:i error_rate:n",
    **MEASURES,
    endpoint=typed("string", "The proxied route.", enum=list(Endpoint)),
)
BUCKET_ROW = obj("start_ms:i start:t requests:i errors:i", **MEASURES)
SPEND = obj(
    "requests:i cost_usd:n estimated_usd:n",
    "requests cost_usd estimated_usd tokens",
    "Priced answers: how many, what they cost in US dollars (`estimated_usd`: the part "
    "from estimated tokens), and their tokens.",
    tokens=ref("Tokens"),
)
BUDGET = obj(
    "budget client:s? cap_usd:n spent_usd:n reserved_usd:n left_usd:n day resets_at:t",
    "budget client cap_usd spent_usd reserved_usd left_usd day resets_at",
    "One paid budget today: `global` (`settings.paidBudgetUsdPerDay`) or `client:<name>`; "
    "spent, reserved by paid calls in flight, left, and when it resets (midnight in "
    "`settings.timeZone`; `day` is that day's date there).",
)
CLIENT_ROW = obj(
    "client:s? requests:i successes:i errors:i error_rate:n",
    **MEASURES,
    rate_limited=typed(
        "integer", "Requests refused by the client's own limits (`client_rate_limited`)."
    ),
)
CLIENT_VIEW = obj(
    "name key",
    "name key usage",
    "A client as configured, its key masked (a `${VAR}` reference shown as written), with "
    "`usage`: what is left of each of its own limits now, and with a paid budget of its "
    "own, `budget`: that budget today.",
    budget=BUDGET,
    usage=list_of(
        obj(
            "limit:i? remaining:i? reset_at:t? source:s?",
            kind=typed("string", enum=["requests", "tokens"]),
            window=typed("string", enum=["minute", "day"]),
        )
    ),
)
STATUS = obj(
    "config_path:s? generation:i loaded_at:n last_reload_at:n? last_error_at:n?",
    last_error=nullable("array", "Why the file on disk is rejected.", items=ref("ConfigIssue")),
    access=obj(
        "label write:b",
        "label write",
        "The caller: its label (`admin#1`, `key#2`, `open`) and whether it may edit.",
    ),
)
