"""`GET /openapi.json`: public, valid OpenAPI 3.1, and in step with the routes.

A route added without an operation in `chain429/server/openapi.py` fails here, and so
does an operation whose route is gone.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx
import openapi_spec_validator
import pytest
from sanic import Sanic

from chain429 import __version__
from chain429.config.model import Chain, ChainEntry, Provider, RateLimits, Settings
from chain429.server.openapi import DOCUMENT
from fixtures.servers import chain_config, provider_entry

_probe_names = itertools.count(1)


def operations(app: Sanic) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route of `app`: `<name>` and `<name:str>` become `{name}`."""
    found = set()
    for route in app.router.routes:
        path = "/" + re.sub(r"<([^:>]+)(?::[^>]*)?>", r"{\1}", route.path.lstrip("/"))
        found |= {(m.lower(), path) for m in route.methods if m not in ("HEAD", "OPTIONS")}
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


@pytest.fixture
def served(fake, proxy):
    a = fake("a")
    p = proxy(chain_config([provider_entry("a", a)], [("a", "model-a")]))
    answer = httpx.get(f"{p.url}/openapi.json", timeout=10)  # no key
    return p, answer


def test_the_document_is_public_json_openapi_3_1(served):
    p, answer = served
    assert p.api_key  # keys are configured, yet none is needed here
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    document = json.loads(answer.content)
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["version"] == __version__
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == (
        "header",
        "x-api-key",
    )
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    # The bytes are built once and served as they are.
    assert httpx.get(f"{p.url}/openapi.json", timeout=10).content == answer.content


def test_every_route_of_the_app_is_documented(served):
    p, answer = served
    document = answer.json()
    routes = operations(p.app)
    assert ("post", "/v1/chat/completions") in routes  # the conversion found the real routes
    assert ("get", "/v1/stats/requests/{request_id}") in routes
    missing = routes - documented(document)
    assert not missing, (
        f"routes without an operation in chain429/server/openapi.py: {sorted(missing)}"
    )
    # The served document lists exactly what this app serves: no route that would 404.
    assert documented(document) == routes
    for method, path in routes:
        operation = document["paths"][path][method]
        assert operation["summary"] and operation["responses"]
        declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


def test_every_documented_operation_has_a_route(served):
    p, _ = served
    routes = operations(p.app)
    assert {path for _, path in routes} >= {"/v1/admin/config", "/v1/test/chain/{name}"}
    stale = documented(DOCUMENT) - routes
    assert not stale, f"operations in chain429/server/openapi.py without a route: {sorted(stale)}"
    assert routes - documented(DOCUMENT) == set()


def test_every_reference_resolves(served):
    document = served[1].json()

    def refs(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(document))
    assert "#/components/schemas/Error" in found
    for ref in found:
        node = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"unresolved $ref {ref}"
            node = node[part]


def test_the_shapes_the_clients_rely_on(served):
    document = served[1].json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert request["required"] == ["messages"] and request["additionalProperties"] is True
    assert request["properties"]["messages"]["minItems"] == 1
    assert {"text/event-stream", "application/json"} <= set(chat["responses"]["200"]["content"])
    assert {"X-429chain-Provider", "X-429chain-Trace", "X-Request-Id"} <= set(
        chat["responses"]["200"]["headers"]
    )
    assert "Retry-After" in chat["responses"]["503"]["headers"]
    error = {"$ref": "#/components/schemas/Error"}
    assert chat["responses"]["401"]["content"]["application/json"]["schema"] == error
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(kind.startswith("text/plain") for kind in metrics)
    limit = document["components"]["parameters"]["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)


def test_the_document_passes_an_openapi_validator(served):
    openapi_spec_validator.validate(served[1].json())


def test_the_config_bodies_carry_the_models_descriptions(served):
    """The admin API's provider, chain and settings bodies explain each field as
    docs/config.md and an editor do: the model's own description."""
    schemas = served[1].json()["components"]["schemas"]
    bodies = {
        "ProviderConfig": Provider,
        "ChainConfig": Chain,
        "SettingsPatch": Settings,
        "RateLimits": RateLimits,
        "ChainEntry": ChainEntry,
    }
    in_the_path = {("ProviderConfig", "id"), ("ChainConfig", "name")}
    for body, model in bodies.items():
        properties = schemas[body]["properties"]
        assert set(properties) == {f.alias or n for n, f in model.model_fields.items()}, body
        for name, field in model.model_fields.items():
            described = properties[field.alias or name]["description"]
            if (body, field.alias or name) in in_the_path:
                assert described == "Optional: defaults to the one in the path."
            else:
                assert described == field.description, (body, name)
    assert "`groq`" in schemas["ProviderConfig"]["properties"]["type"]["description"]
    assert "groq" in schemas["ProviderConfig"]["properties"]["type"]["enum"]
    # The writer takes a null header value (it leaves the header out), and a null map.
    headers = schemas["ProviderConfig"]["properties"]["headers"]["anyOf"]
    assert {"type": "null"} in headers
    assert {"type": "object", "additionalProperties": {"type": ["string", "null"]}} in headers
