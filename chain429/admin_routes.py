"""The admin API: read, edit, validate and reload the config file.

Every change goes through `chain429.config_writer` (the same code the CLI
uses): the whole new config is validated first, then the file is written
atomically with its comments and `${VAR}` references kept, then the new
snapshot is swapped in. Writes are serialized, and each answer carries the
config generation as an `ETag`; a write whose `If-Match` names an older
generation gets 412 instead of overwriting a change it has not seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from chain429.auth import authorize
from chain429.chain_probe import probe_chain
from chain429.config import ConfigError, parse_config_text
from chain429.config_diff import diff_configs, unified_diff
from chain429.config_writer import ConfigDocument, ConfigEditError, apply_edit
from chain429.errors import ApiError
from chain429.masking import mask_config
from chain429.reloader import Reloader

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
    except ValueError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _then(word: str, change: Callable[[ConfigDocument], object]) -> Callable[[ConfigDocument], str]:
    """An edit that returns nothing, answering with what it did."""

    def run(document: ConfigDocument) -> str:
        change(document)
        return word

    return run


def register_admin_routes(app: Sanic) -> None:
    write_lock = asyncio.Lock()

    def reloader() -> Reloader:
        found: Reloader = app.ctx.reloader
        return found

    def admin(request: Request) -> None:
        authorize(request, app.ctx.snapshot, admin=True)

    async def edit(request: Request, change: Callable[[ConfigDocument], Any]) -> HTTPResponse:
        """Validate the whole new config, write it atomically, swap it in."""
        admin(request)
        path = reloader().path
        if path is None:
            raise ApiError(
                409, "This server was started without a config file to edit.", code="no_config_file"
            )
        async with write_lock, reloader().lock:
            generation = app.ctx.snapshot.generation
            wanted = request.headers.get("if-match")
            if wanted is not None and wanted.strip() not in (_etag(generation), "*"):
                raise ApiError(
                    412,
                    f"The config changed (now generation {generation}); "
                    "read it again before writing.",
                    code="precondition_failed",
                    headers={"ETag": _etag(generation)},
                )
            try:
                config, result = await asyncio.to_thread(apply_edit, path, change)
            except ConfigEditError as err:
                if err.status == 422:
                    body = {
                        "error": {
                            "message": str(err),
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_config",
                        },
                        "errors": _issues(err.issues),
                    }
                    return _answer(body, generation, 422)
                raise ApiError(err.status, str(err), code=_CODES.get(err.status)) from None
            written = await asyncio.to_thread(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
            snapshot = await reloader().adopt(config, written_digest=written)
        return _answer({"result": result, "generation": snapshot.generation}, snapshot.generation)

    @app.get("/v1/admin/config")
    async def get_config(request: Request) -> HTTPResponse:
        admin(request)
        path = reloader().path
        generation = app.ctx.snapshot.generation
        if path is None:
            config = app.ctx.snapshot.config
            data = mask_config(config.model_dump(mode="json", by_alias=True, exclude_defaults=True))
        else:
            document = await asyncio.to_thread(ConfigDocument.load, path)
            data = document.masked()
        return _answer(
            {"generation": generation, "path": str(path) if path else None, "config": data},
            generation,
        )

    @app.put("/v1/admin/providers/<provider_id>")
    async def put_provider(request: Request, provider_id: str) -> HTTPResponse:
        body = _json_body(request)
        if body.setdefault("id", provider_id) != provider_id:
            raise ApiError(400, "The body's id differs from the one in the path.", param="id")
        return await edit(request, lambda doc: doc.upsert_provider(body))

    @app.delete("/v1/admin/providers/<provider_id>")
    async def delete_provider(request: Request, provider_id: str) -> HTTPResponse:
        return await edit(request, _then("deleted", lambda doc: doc.delete_provider(provider_id)))

    @app.put("/v1/admin/chains/<name>")
    async def put_chain(request: Request, name: str) -> HTTPResponse:
        body = _json_body(request)
        if body.setdefault("name", name) != name:
            raise ApiError(400, "The body's name differs from the one in the path.", param="name")
        return await edit(request, lambda doc: doc.upsert_chain(body))

    @app.delete("/v1/admin/chains/<name>")
    async def delete_chain(request: Request, name: str) -> HTTPResponse:
        return await edit(request, _then("deleted", lambda doc: doc.delete_chain(name)))

    @app.patch("/v1/admin/settings")
    async def patch_settings(request: Request) -> HTTPResponse:
        body = _json_body(request)

        return await edit(request, _then("updated", lambda doc: doc.patch_settings(body)))

    @app.post("/v1/admin/validate")
    async def validate(request: Request) -> HTTPResponse:
        admin(request)
        text = (request.body or b"").decode("utf-8", errors="replace")
        path = reloader().path
        try:
            await asyncio.to_thread(
                parse_config_text,
                text,
                filename=None,
                dotenv_dir=path.parent if path else None,
            )
        except ConfigError as err:
            body = {"valid": False, "errors": _issues(err.issues)}
            return raw(json.dumps(body).encode(), 422, None, _JSON)
        return raw(b'{"valid": true}', 200, None, _JSON)

    @app.post("/v1/admin/diff")
    async def diff(request: Request) -> HTTPResponse:
        """What would change going from the running config to the YAML in the body."""
        admin(request)
        text = (request.body or b"").decode("utf-8", errors="replace")
        path = reloader().path
        try:
            new = await asyncio.to_thread(
                parse_config_text, text, filename=None, dotenv_dir=path.parent if path else None
            )
        except ConfigError as err:
            body = {"valid": False, "errors": _issues(err.issues)}
            return raw(json.dumps(body).encode(), 422, None, _JSON)
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
        admin(request)
        result = await reloader().reload(force=True)
        body = {"reloaded": result.changed, "generation": result.generation, "errors": result.error}
        return _answer(body, result.generation, 200 if result.error is None else 422)

    @app.post("/v1/test/chain/<name>")
    async def test_chain(request: Request, name: str) -> HTTPResponse:
        admin(request)
        snapshot = app.ctx.snapshot
        chain = snapshot.chains.get(name)
        if chain is None:
            raise ApiError(
                404,
                f"No chain named '{name}'; chains: {', '.join(snapshot.chains)}.",
                code="not_found",
                param="name",
            )
        stream = request.args.get("stream", "false").lower() in ("1", "true", "yes")
        results = await probe_chain(snapshot, chain, app.ctx.upstream, app.ctx.state, stream=stream)
        ok = sum(1 for r in results if r["result"] == "ok")
        return _answer(
            {"chain": name, "stream": stream, "working": ok, "entries": results},
            snapshot.generation,
        )

    @app.get("/v1/admin/status")
    async def status(request: Request) -> HTTPResponse:
        admin(request)
        return _answer(reloader().status(), app.ctx.snapshot.generation)


_CODES = {404: "not_found", 409: "conflict", 412: "precondition_failed"}
