"""The admin API: read, edit, validate and reload the config file; steer the running server.

Every change goes through `chain429.config.writer` (the same code the CLI
uses): the whole new config is validated first, then the file is written
atomically with its comments and `${VAR}` references kept, then the new
snapshot is swapped in. Writes are serialized, and each answer carries the
config generation as an `ETag`; a write whose `If-Match` names an older
generation gets 412 instead of overwriting a change it has not seen.

Steering, for the CLI and the web UI alike: clear an entry's or a provider's
cooldowns, test a chain's entries or a provider's models (as JSON at the end,
or live as server-sent events), and say what the caller's key may do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic.alias_generators import to_camel
from sanic import Request, Sanic
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
from chain429.routing.probe import probe_chain
from chain429.routing.runtime import ChainRuntime, Snapshot
from chain429.server.auth import Scope, authorize, exposure_problem
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY, YAML_BODY
from chain429.server.reloader import Reloader
from chain429.upstream.openai_error import error_object

_JSON = "application/json"


def _etag(generation: int) -> str:
    return f'"{generation}"'


def _answer(body: Any, generation: int, status: int = 200) -> HTTPResponse:
    return raw(json.dumps(body).encode(), status, {"ETag": _etag(generation)}, _JSON)


def _issues(issues: Any) -> list[dict[str, Any]]:
    return [{"path": i.path, "line": i.line, "message": i.message} for i in issues]


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, f"The request body is not valid JSON: {detail}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _yaml_body(request: Request) -> str:
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
    return _answer(body, generation, err.status)


def _then(word: str, change: Callable[[ConfigDocument], object]) -> Callable[[ConfigDocument], str]:
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


def register_admin_routes(app: Sanic) -> None:
    write_lock = asyncio.Lock()

    def reloader() -> Reloader:
        found: Reloader = app.ctx.reloader
        return found

    def admin(request: Request, scope: Scope = Scope.READ) -> None:
        authorize(request, app.ctx.snapshot, scope)

    def check_references(body: Any) -> None:
        allowed = submitted_reference_rule(app.ctx.snapshot.config)
        refused = sorted(name for name in references_in(body) if not allowed(name))
        if refused:
            raise ApiError(
                422,
                f"${{{refused[0]}}} may not be referenced here: an edit may use the variables "
                "the running config uses, CHAIN429_* and *_API_KEY.",
                code="invalid_config",
            )

    def stays_closed(config: Config) -> None:
        problem = exposure_problem(config, app.ctx.bind_host)
        if problem is not None:
            message = f"this edit would leave the server {problem}"
            issue = ConfigIssue(None, None, "settings.apiKeys", message)
            raise ConfigEditError(422, message, [issue])

    async def edit(
        request: Request, change: Callable[[dict[str, Any]], Callable[[ConfigDocument], Any]]
    ) -> HTTPResponse:
        """Authorize, read the body, validate the whole new config, write it, swap it in.

        `change` turns the request body (None for routes without one) into the
        edit. In that order: the key is checked before the body is parsed; a
        bad body is reported even when `If-Match` is stale.
        """
        admin(request, Scope.WRITE)
        route = request.route
        body = _json_body(request) if route and getattr(route.ctx, "body", None) else {}
        check_references(body)
        change_document = change(body)
        path = reloader().path
        if path is None:
            raise ApiError(
                409, "This server was started without a config file to edit.", code="no_config_file"
            )
        async with write_lock, reloader().lock:
            generation = app.ctx.snapshot.generation
            wanted = request.headers.get("if-match")

            def fresh(config: Config) -> None:
                stays_closed(config)
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
            written = await asyncio.to_thread(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
            snapshot = await reloader().adopt(config, written_digest=written)
        return _answer({"result": result, "generation": snapshot.generation}, snapshot.generation)

    def parse_submitted(text: str) -> Config:
        """A config from the caller: checked with the server's environment, but only
        the variables it may name (chain429.config.submitted_reference_rule)."""
        path = reloader().path
        return parse_config_text(
            text,
            filename=None,
            dotenv_dir=path.parent if path else None,
            allowed_references=submitted_reference_rule(app.ctx.snapshot.config),
        )

    @app.get("/v1/admin/config")
    async def get_config(request: Request) -> HTTPResponse:
        admin(request)
        path = reloader().path
        generation = app.ctx.snapshot.generation
        if path is None:
            config = app.ctx.snapshot.config
            dump = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            data = mask_config(redact(dump, config.resolved_values))
        else:
            document = await asyncio.to_thread(ConfigDocument.load, path)
            data = document.masked()
        return _answer(
            {"generation": generation, "path": str(path) if path else None, "config": data},
            generation,
        )

    @app.put("/v1/admin/providers/<provider_id>", ctx_body=JSON_BODY)
    async def put_provider(request: Request, provider_id: str) -> HTTPResponse:
        def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
            if body.setdefault("id", provider_id) != provider_id:
                raise ApiError(400, "The body's id differs from the one in the path.", param="id")
            return lambda doc: doc.upsert_provider(body)

        return await edit(request, change)

    @app.delete("/v1/admin/providers/<provider_id>")
    async def delete_provider(request: Request, provider_id: str) -> HTTPResponse:
        return await edit(
            request, lambda _: _then("deleted", lambda doc: doc.delete_provider(provider_id))
        )

    @app.put("/v1/admin/chains/<name>", ctx_body=JSON_BODY)
    async def put_chain(request: Request, name: str) -> HTTPResponse:
        def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
            if body.setdefault("name", name) != name:
                raise ApiError(
                    400, "The body's name differs from the one in the path.", param="name"
                )
            return lambda doc: doc.upsert_chain(body)

        return await edit(request, change)

    @app.delete("/v1/admin/chains/<name>")
    async def delete_chain(request: Request, name: str) -> HTTPResponse:
        return await edit(request, lambda _: _then("deleted", lambda doc: doc.delete_chain(name)))

    @app.patch("/v1/admin/settings", ctx_body=JSON_BODY)
    async def patch_settings(request: Request) -> HTTPResponse:
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
            return _then("updated", lambda doc: doc.patch_settings(body))

        return await edit(request, change)

    @app.post("/v1/admin/validate", ctx_body=YAML_BODY)
    async def validate(request: Request) -> HTTPResponse:
        admin(request)
        text = _yaml_body(request)
        try:
            await asyncio.to_thread(parse_submitted, text)
        except ConfigError as err:
            body = {"valid": False, "errors": _issues(err.issues)}
            return raw(json.dumps(body).encode(), 422, None, _JSON)
        return raw(b'{"valid": true}', 200, None, _JSON)

    @app.post("/v1/admin/diff", ctx_body=YAML_BODY)
    async def diff(request: Request) -> HTTPResponse:
        """What would change going from the running config to the YAML in the body."""
        admin(request)
        text = _yaml_body(request)
        try:
            new = await asyncio.to_thread(parse_submitted, text)
        except ConfigError as err:
            body = {"valid": False, "errors": _issues(err.issues)}
            return raw(json.dumps(body).encode(), 422, None, _JSON)
        return diff_answer(new)

    @app.get("/v1/admin/diff")
    async def diff_file(request: Request) -> HTTPResponse:
        """What a reload would change: the config file on disk against the running config
        (as `chain429 diff`; the web UI cannot send the file, whose secrets it sees masked)."""
        admin(request)
        path = reloader().path
        if path is None:
            raise ApiError(
                409, "This server was started without a config file.", code="no_config_file"
            )
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as err:
            body = {"valid": False, "errors": _issues(err.issues)}
            return raw(json.dumps(body).encode(), 422, None, _JSON)
        return diff_answer(new)

    def diff_answer(new: Config) -> HTTPResponse:
        running = app.ctx.snapshot.config
        semantic = diff_configs(running, new)
        body = {
            "valid": True,
            "same": semantic.empty,
            "generation": app.ctx.snapshot.generation,
            "diff": semantic.to_dict(),
            "summary": semantic.summary_lines(),
            "unified": unified_diff(running, new, old_name="running", new_name="file"),
        }
        return _answer(body, app.ctx.snapshot.generation)

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> HTTPResponse:
        # A read: it re-reads the owner's file and cannot change what it says
        # (the CLI asks for it after every edit it writes).
        admin(request)
        result = await reloader().reload(force=True)
        body = {"reloaded": result.changed, "generation": result.generation, "errors": result.error}
        return _answer(body, result.generation, 200 if result.error is None else 422)

    @app.post("/v1/test/chain/<name>")
    async def test_chain(request: Request, name: str) -> HTTPResponse | None:
        admin(request, Scope.WRITE)
        snapshot = app.ctx.snapshot
        chain = snapshot.chains.get(name)
        if chain is None:
            raise ApiError(
                404,
                f"No chain named '{name}'; chains: {', '.join(snapshot.chains)}.",
                code="not_found",
                param="name",
            )
        return await probe(request, snapshot, chain, {"chain": name})

    @app.post("/v1/test/provider/<provider_id>")
    async def test_provider(request: Request, provider_id: str) -> HTTPResponse | None:
        """Each model the provider serves in a chain, once (as `chain429 provider test`)."""
        admin(request, Scope.WRITE)
        snapshot = app.ctx.snapshot
        known_provider(snapshot, provider_id)
        entries: dict[str, Any] = {}
        for chain in snapshot.chains.values():
            for entry in chain.entries:
                if entry.provider_id == provider_id:
                    entries.setdefault(entry.model, entry)
        tested = ChainRuntime(f"provider:{provider_id}", tuple(entries.values()))
        return await probe(request, snapshot, tested, {"provider": provider_id})

    async def probe(
        request: Request, snapshot: Snapshot, chain: ChainRuntime, about: dict[str, Any]
    ) -> HTTPResponse | None:
        """Run a test; as JSON at the end, or (`Accept: text/event-stream`) as events live."""
        flag = request.args.get("stream", "false").lower()
        if flag not in ("true", "false"):
            raise ApiError(400, "'stream' must be true or false.", param="stream")
        stream = flag == "true"
        state, upstream = app.ctx.state, app.ctx.upstream

        def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
            ok = sum(1 for r in results if r["result"] == "ok")
            return {**about, "stream": stream, "working": ok, "entries": results}

        if "text/event-stream" not in request.headers.get("accept", ""):
            results = await probe_chain(snapshot, chain, upstream, state, stream=stream)
            return _answer(summary(results), snapshot.generation)
        response = await request.respond(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            content_type="text/event-stream",
        )
        sending = asyncio.Lock()  # entries run at once; one event at a time on the wire

        async def send(event: dict[str, Any]) -> None:
            async with sending:
                await response.send(b"data: " + json.dumps(event).encode() + b"\n\n")

        listed = [
            {"index": i, "provider": e.provider_id, "model": e.model}
            for i, e in enumerate(chain.entries)
        ]
        await send({"type": "start", **about, "stream": stream, "entries": listed})
        results = await probe_chain(snapshot, chain, upstream, state, stream=stream, on_event=send)
        await send({"type": "done", **summary(results)})
        await response.eof()
        return None

    def known_provider(snapshot: Snapshot, provider_id: str) -> None:
        if provider_id not in {p.id for p in snapshot.config.providers}:
            known = ", ".join(p.id for p in snapshot.config.providers) or "none"
            raise ApiError(
                404,
                f"No provider with id '{provider_id}'; providers: {known}.",
                code="not_found",
                param="provider",
            )

    @app.post("/v1/admin/limits/clear", ctx_body=JSON_BODY)
    async def clear_limits(request: Request) -> HTTPResponse:
        """End an entry's cooldowns (`{"provider", "model"}`) or a provider's (`{"provider"}`)."""
        admin(request, Scope.WRITE)
        body = _json_body(request)
        unknown = sorted(set(body) - {"provider", "model"})
        if unknown:
            raise ApiError(400, f"Unknown field '{unknown[0]}'.", param=unknown[0])
        provider, model = body.get("provider"), body.get("model")
        if not isinstance(provider, str) or not provider:
            raise ApiError(400, "'provider' must be a non-empty string.", param="provider")
        if "model" in body and (not isinstance(model, str) or not model):
            raise ApiError(400, "'model' must be a non-empty string.", param="model")
        snapshot = app.ctx.snapshot
        known_provider(snapshot, provider)
        entries = []
        if "model" in body:
            chains = (*snapshot.chains.values(), *snapshot.model_chains.values())
            entries = [
                e
                for c in chains
                for e in c.entries
                if (e.provider_id, e.model) == (provider, model)
            ]
            if not entries:
                raise ApiError(
                    404, f"No chain entry {provider}/{model}.", code="not_found", param="model"
                )
        cleared = await app.ctx.state.clear(provider, entries, time.time())
        return raw(json.dumps({"cleared": cleared}).encode(), 200, None, _JSON)

    @app.get("/v1/admin/status")
    async def status(request: Request) -> HTTPResponse:
        """The reloader's state, and what the caller's key may do (the web UI asks)."""
        label = authorize(request, app.ctx.snapshot, Scope.READ)
        try:
            authorize(request, app.ctx.snapshot, Scope.WRITE)
            write = True
        except ApiError:
            write = False
        body = {**reloader().status(), "access": {"label": label, "write": write}}
        return _answer(body, app.ctx.snapshot.generation)


_CODES = {404: "not_found", 409: "conflict", 412: "precondition_failed", 422: "invalid_config"}
