"""The admin API: read, edit, validate and reload the config file; steer the running server.

Every change goes through `chain429.config.writer` (the same code the CLI
uses): the whole new config is validated first, then the file is written
atomically with its comments and `${VAR}` references kept, then the new
snapshot is swapped in. Writes are serialized, and each answer carries the
config generation as an `ETag`; a write whose `If-Match` names an older
generation gets 412 instead of overwriting a change it has not seen.

`/v1/admin/status` says what the caller's key may do (the web UI asks).
Steering the running server (tests, clearing cooldowns) is `steering.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from pydantic.alias_generators import to_camel
from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.config.diff import diff_configs, unified_diff
from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.loader import (
    load_config,
    parse_config_text,
    references_in,
    submitted_reference_rule,
)
from chain429.config.masking import mask_config, redact
from chain429.config.model import Config
from chain429.config.writer import ConfigDocument, ConfigEditError, apply_edit
from chain429.server.auth import Scope, authorize, exposure_problem, requires
from chain429.server.context import AppContext, AppRequest
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY, YAML_BODY
from chain429.server.reloader import config_digest
from chain429.upstream.openai_error import error_object

_JSON = "application/json"


def _etag(generation: int) -> str:
    return f'"{generation}"'


def answer(body: Any, generation: int, status: int = 200) -> HTTPResponse:
    return raw(json.dumps(body).encode(), status, {"ETag": _etag(generation)}, _JSON)


def _issues(issues: Any) -> list[dict[str, Any]]:
    return [{"path": i.path, "line": i.line, "message": i.message} for i in issues]


def json_body(request: AppRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, f"The request body is not valid JSON: {detail}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _yaml_body(request: AppRequest) -> str:
    try:
        return (request.body or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"The request body is not UTF-8: {exc}") from None


def _edit_error(err: ConfigEditError, generation: int) -> HTTPResponse:
    """A refused edit: what was wrong, where (`param` names the first field)."""
    code = _CODES.get(err.status, "invalid_config")
    first = err.issues[0].path if err.issues else None
    body = {
        "error": error_object(err.message, "invalid_request_error", code, first or None),
        "errors": _issues(err.issues),
    }
    return answer(body, generation, err.status)


def then(word: str, change: Callable[[ConfigDocument], object]) -> Callable[[ConfigDocument], str]:
    """An edit that returns nothing, answering with what it did."""

    def run(document: ConfigDocument) -> str:
        change(document)
        return word

    return run


# Settings that only the file may change: where the request log lives is a
# deploy-time choice, and the others decide who can reach the server and
# where provider keys may go (docs/security.md).
DEPLOY_TIME_SETTINGS = frozenset(
    {
        "dbPath",
        "databaseUrl",
        "host",
        "port",
        "allowedHosts",
        "corsOrigins",
        "allowPrivateUpstreams",
    }
)


admin_routes = Blueprint("admin")


def _check_references(ctx: AppContext, body: Any) -> None:
    allowed = submitted_reference_rule(ctx.snapshot.config)
    refused = sorted(name for name in references_in(body) if not allowed(name))
    if refused:
        raise ApiError(
            422,
            f"${{{refused[0]}}} may not be referenced here: an edit may use the variables "
            "the running config uses, CHAIN429_* and *_API_KEY.",
            code="invalid_config",
        )


def _stays_closed(ctx: AppContext, config: Config) -> None:
    problem = exposure_problem(config, ctx.bind_host)
    if problem is not None:
        message = f"this edit would leave the server {problem}"
        issue = ConfigIssue(None, None, "settings.apiKeys", message)
        raise ConfigEditError(422, message, [issue])


Change = Callable[[dict[str, Any]], Callable[[ConfigDocument], Any]]


async def edit_config(request: AppRequest, change: Change) -> HTTPResponse:
    """Read the body, validate the whole new config, write it, swap it in.

    `change` turns the request body (empty for routes without one) into the
    edit. The key was checked before (`requires(Scope.WRITE)`); a bad body is
    reported even when `If-Match` is stale.
    """
    ctx = request.app.ctx
    route = request.route
    body = json_body(request) if route and getattr(route.ctx, "body", None) else {}
    _check_references(ctx, body)
    change_document = change(body)
    path = ctx.reloader.path
    if path is None:
        raise ApiError(
            409, "This server was started without a config file to edit.", code="no_config_file"
        )
    async with ctx.admin_write_lock, ctx.reloader.lock:
        generation = ctx.snapshot.generation
        wanted = request.headers.get("if-match")

        def fresh(config: Config) -> None:
            _stays_closed(ctx, config)
            if wanted is not None and wanted.strip() not in (_etag(generation), "*"):
                raise ApiError(
                    412,
                    f"The config changed (now generation {generation}); "
                    "read it again before writing.",
                    code="precondition_failed",
                    headers={"ETag": _etag(generation)},
                )

        try:
            config, result = await asyncio.to_thread(
                apply_edit, path, change_document, base_must_be_valid=True, check=fresh
            )
        except ConfigEditError as err:
            return _edit_error(err, generation)
        written = await asyncio.to_thread(config_digest, path)
        snapshot = await ctx.reloader.adopt(config, written_digest=written)
    return answer({"result": result, "generation": snapshot.generation}, snapshot.generation)


def _parse_submitted(ctx: AppContext, text: str) -> Config:
    """A config from the caller: checked with the server's environment, but only
    the variables it may name (chain429.config.submitted_reference_rule)."""
    path = ctx.reloader.path
    return parse_config_text(
        text,
        filename=None,
        dotenv_dir=path.parent if path else None,
        allowed_references=submitted_reference_rule(ctx.snapshot.config),
    )


@admin_routes.get("/v1/admin/config")
@requires(Scope.READ)
async def get_config(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    path = ctx.reloader.path
    generation = ctx.snapshot.generation
    if path is None:
        config = ctx.snapshot.config
        dump = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data = mask_config(redact(dump, config.resolved_values))
    else:
        document = await asyncio.to_thread(ConfigDocument.load, path)
        data = document.masked()
    return answer(
        {"generation": generation, "path": str(path) if path else None, "config": data},
        generation,
    )


@admin_routes.put("/v1/admin/providers/<provider_id>", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def put_provider(request: AppRequest, provider_id: str) -> HTTPResponse:
    def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
        if body.setdefault("id", provider_id) != provider_id:
            raise ApiError(400, "The body's id differs from the one in the path.", param="id")
        return lambda doc: doc.upsert_provider(body)

    return await edit_config(request, change)


@admin_routes.delete("/v1/admin/providers/<provider_id>")
@requires(Scope.WRITE)
async def delete_provider(request: AppRequest, provider_id: str) -> HTTPResponse:
    return await edit_config(
        request, lambda _: then("deleted", lambda doc: doc.delete_provider(provider_id))
    )


@admin_routes.put("/v1/admin/chains/<name>", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def put_chain(request: AppRequest, name: str) -> HTTPResponse:
    def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
        if body.setdefault("name", name) != name:
            raise ApiError(400, "The body's name differs from the one in the path.", param="name")
        return lambda doc: doc.upsert_chain(body)

    return await edit_config(request, change)


@admin_routes.delete("/v1/admin/chains/<name>")
@requires(Scope.WRITE)
async def delete_chain(request: AppRequest, name: str) -> HTTPResponse:
    return await edit_config(request, lambda _: then("deleted", lambda doc: doc.delete_chain(name)))


# `<name:path>`: an alias may hold slashes (`openai/gpt-4o-mini`, as OpenRouter names
# models), sent as they are or encoded (`%2F`, as OpenAPI clients send a path parameter).
@admin_routes.put("/v1/admin/aliases/<name:path>", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def put_alias(request: AppRequest, name: str) -> HTTPResponse:
    """Point the alias `name` at a chain: `{"chain": "<name>"}`."""
    name = unquote(name)

    def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
        unknown = sorted(set(body) - {"chain"})
        if unknown:
            raise ApiError(400, f"Unknown field '{unknown[0]}'.", param=unknown[0])
        chain = body.get("chain")
        if not isinstance(chain, str) or not chain:
            raise ApiError(400, "'chain' must be a non-empty string.", param="chain")
        return lambda doc: doc.set_alias(name, chain)

    return await edit_config(request, change)


@admin_routes.delete("/v1/admin/aliases/<name:path>")
@requires(Scope.WRITE)
async def delete_alias(request: AppRequest, name: str) -> HTTPResponse:
    name = unquote(name)
    return await edit_config(request, lambda _: then("deleted", lambda doc: doc.delete_alias(name)))


@admin_routes.patch("/v1/admin/settings", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def patch_settings(request: AppRequest) -> HTTPResponse:
    def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
        fixed = sorted({to_camel(key) for key in body} & DEPLOY_TIME_SETTINGS)
        if fixed:
            raise ApiError(
                422,
                f"settings.{fixed[0]} is a deploy-time setting: change it in the file, "
                "then restart.",
                code="deploy_time_setting",
                param=f"settings.{fixed[0]}",
            )
        return then("updated", lambda doc: doc.patch_settings(body))

    return await edit_config(request, change)


@admin_routes.post("/v1/admin/validate", ctx_body=YAML_BODY)
@requires(Scope.READ)
async def validate(request: AppRequest) -> HTTPResponse:
    text = _yaml_body(request)
    try:
        await asyncio.to_thread(_parse_submitted, request.app.ctx, text)
    except ConfigError as err:
        body = {"valid": False, "errors": _issues(err.issues)}
        return raw(json.dumps(body).encode(), 422, None, _JSON)
    return raw(b'{"valid": true}', 200, None, _JSON)


@admin_routes.post("/v1/admin/diff", ctx_body=YAML_BODY)
@requires(Scope.READ)
async def diff(request: AppRequest) -> HTTPResponse:
    """What would change going from the running config to the YAML in the body."""
    text = _yaml_body(request)
    try:
        new = await asyncio.to_thread(_parse_submitted, request.app.ctx, text)
    except ConfigError as err:
        body = {"valid": False, "errors": _issues(err.issues)}
        return raw(json.dumps(body).encode(), 422, None, _JSON)
    return _diffanswer(request.app.ctx, new)


@admin_routes.get("/v1/admin/diff")
@requires(Scope.READ)
async def diff_file(request: AppRequest) -> HTTPResponse:
    """What a reload would change: the config file on disk against the running config
    (as `chain429 diff`; the web UI cannot send the file, whose secrets it sees masked)."""
    path = request.app.ctx.reloader.path
    if path is None:
        raise ApiError(409, "This server was started without a config file.", code="no_config_file")
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as err:
        body = {"valid": False, "errors": _issues(err.issues)}
        return raw(json.dumps(body).encode(), 422, None, _JSON)
    return _diffanswer(request.app.ctx, new)


def _diffanswer(ctx: AppContext, new: Config) -> HTTPResponse:
    running = ctx.snapshot.config
    semantic = diff_configs(running, new)
    body = {
        "valid": True,
        "same": semantic.empty,
        "generation": ctx.snapshot.generation,
        "diff": semantic.to_dict(),
        "summary": semantic.summary_lines(),
        "unified": unified_diff(running, new, old_name="running", new_name="file"),
    }
    return answer(body, ctx.snapshot.generation)


@admin_routes.post("/v1/admin/reload")
@requires(Scope.READ)
async def reload(request: AppRequest) -> HTTPResponse:
    # A read: it re-reads the owner's file and cannot change what it says
    # (the CLI asks for it after every edit it writes).
    result = await request.app.ctx.reloader.reload(force=True)
    body = {"reloaded": result.changed, "generation": result.generation, "errors": result.error}
    return answer(body, result.generation, 200 if result.error is None else 422)


@admin_routes.get("/v1/admin/status")
async def status(request: AppRequest) -> HTTPResponse:
    """The reloader's state, and what the caller's key may do (the web UI asks)."""
    ctx = request.app.ctx
    label = authorize(request, ctx.snapshot, Scope.READ)
    try:
        authorize(request, ctx.snapshot, Scope.WRITE)
        write = True
    except ApiError:
        write = False
    body = {**ctx.reloader.status(), "access": {"label": label, "write": write}}
    return answer(body, ctx.snapshot.generation)


_CODES = {404: "not_found", 409: "conflict", 412: "precondition_failed", 422: "invalid_config"}
