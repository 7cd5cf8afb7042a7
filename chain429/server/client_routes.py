"""The admin API's clients: `/v1/admin/clients[/<name>]`, read and edited like providers.

Reads (admin scope) show each client as configured, its key masked (a
`${VAR}` reference is shown as written, which says where the key is and not
what it is), with `usage`: what is left of each of its own limits right now,
from the state store (every instance's count, with Redis).

Writes go through the one round-trip writer (`admin.edit_config`): the whole
new config is validated, written with its comments kept, and swapped in. A
client's `key` is given as a `${VAR}` reference, as a provider's `apiKey` is,
never as a value: the API neither makes a key nor sends one back. A key made
by the server would have to be written into the server's own `.env` and
returned in an answer, where proxies, logs and browser tools may keep it;
`chain429 client add` makes the key on the machine that holds the `.env`, and
prints it once on that terminal. So over the API the variable must already
be set where the server reads it (its environment, or the `.env` beside its
config), and may be one the running config uses, `CHAIN429_*` or `*_API_KEY`.
Leaving `key` out of a PUT (or sending back its masked form) keeps the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse

from chain429.config.clients import no_such_client
from chain429.config.masking import CLIENT_SECRETS, mask_fields, redact
from chain429.config.model import Client, Config
from chain429.config.writer import ConfigDocument
from chain429.server.admin import answer, edit_config, then
from chain429.server.auth import Scope, requires
from chain429.server.budgets import client_budget
from chain429.server.context import AppContext, AppRequest
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY
from chain429.upstream.times import iso

__all__ = ["client_routes"]

client_routes = Blueprint("clients")


async def client_view(ctx: AppContext, config: Config, client: Client) -> dict[str, Any]:
    """One client as the API shows it: its settings, key masked, its usage now, and its
    paid budget today (as `/v1/admin/budgets` reports it), when it has one."""
    dump = client.model_dump(mode="json", by_alias=True, exclude_none=True)
    shown: dict[str, Any] = mask_fields(redact(dump, config.resolved_values), CLIENT_SECRETS)
    now = time.time()
    runtime = ctx.snapshot.clients.get(client.name)
    quotas = [] if runtime is None else await ctx.state.client_quotas(runtime, now)
    shown["usage"] = [{**q, "reset_at": iso(q["reset_at"])} for q in quotas]  # type: ignore[arg-type]
    budget = await client_budget(ctx.snapshot, ctx.state, client.name, now)
    if budget is not None:
        shown["budget"] = budget
    return shown


def _named(config: Config, name: str) -> Client:
    client = config.client(name)
    if client is None:
        raise ApiError(404, no_such_client(name, config.clients), code="not_found", param="name")
    return client


@client_routes.get("/v1/admin/clients")
@requires(Scope.READ)
async def list_clients(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    config = ctx.snapshot.config
    data = [await client_view(ctx, config, client) for client in config.clients]
    return answer({"object": "list", "data": data}, ctx.snapshot.generation)


@client_routes.get("/v1/admin/clients/<name>")
@requires(Scope.READ)
async def get_client(request: AppRequest, name: str) -> HTTPResponse:
    ctx = request.app.ctx
    config = ctx.snapshot.config
    view = await client_view(ctx, config, _named(config, name))
    return answer(view, ctx.snapshot.generation)


@client_routes.put("/v1/admin/clients/<name>", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def put_client(request: AppRequest, name: str) -> HTTPResponse:
    def change(body: dict[str, Any]) -> Callable[[ConfigDocument], Any]:
        if body.get("name", name) != name:
            raise ApiError(400, "The body's name differs from the one in the path.", param="name")
        return lambda doc: doc.upsert_client({"name": name, **body})  # the name first, as written

    return await edit_config(request, change)


@client_routes.delete("/v1/admin/clients/<name>")
@requires(Scope.WRITE)
async def delete_client(request: AppRequest, name: str) -> HTTPResponse:
    return await edit_config(
        request, lambda _: then("deleted", lambda doc: doc.delete_client(name))
    )
