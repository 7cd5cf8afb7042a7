"""What one app carries between requests: a typed context instead of Sanic's namespace.

Sanic gives every app a `SimpleNamespace` as `app.ctx`; handlers that read
`app.ctx.snapshot` from it get `Any`, and a typo is a 500 at run time. Sanic's
typing samples pass a dataclass instead (`Sanic[Config, AppContext]`): every
route, the reloader and the metrics read the same declared fields, and mypy
checks each use. `App` and `AppRequest` are the aliases handlers annotate with.

The upstream client and the router exist only while the server runs (they
own an aiohttp pool bound to the server's event loop); their properties say
so clearly instead of handing out None.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, TypeAlias

from sanic import Request, Sanic
from sanic.config import Config as SanicConfig

from chain429.routing.limits import StateStore
from chain429.routing.router import Router
from chain429.routing.runtime import Snapshot
from chain429.upstream.client import Upstream

if TYPE_CHECKING:
    from peewee import Database

    from chain429.requestlog.persist import StatePersister
    from chain429.requestlog.writer import Telemetry
    from chain429.server.connections import ConnectionGuard
    from chain429.server.instances import Heartbeat
    from chain429.server.metrics import Metrics
    from chain429.server.reloader import Reloader


class NotServing(RuntimeError):
    """The upstream client or the router was asked for before the server started."""


@dataclass(eq=False)
class AppContext:
    """The app's state; one per app, built by `create_app`."""

    snapshot: Snapshot  # the config in force; a reload swaps this one reference
    config_path: Path | None  # the file a reload reads; None for an app built from a model
    # Where the server listens (set again by whoever binds it): an edit or a
    # reload that would leave a non-loopback server without keys is refused.
    bind_host: str
    state: StateStore  # cooldowns, quota buckets, in-flight reservations
    telemetry: Telemetry | None  # the request log; None keeps none
    database: Database | None  # the request log's database: stats, persisted limit state
    started_at: float = field(default_factory=time.time)
    cooldowns_in_force: int = 0  # refreshed per /metrics scrape
    breakers_open: int = 0  # likewise
    # Paid budgets' US dollars left today, by client ("": settings.paidBudgetUsdPerDay);
    # likewise refreshed per scrape.
    budgets_left: dict[str, float] = field(default_factory=dict)
    pauses_in_force: int = 0  # likewise
    draining: bool = False  # stopping: every answer closes its connection
    persister: StatePersister | None = None  # saves `state` to the log's database
    # Admin edits one at a time: each validates against the file the last one wrote.
    admin_write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    openapi_json: bytes | None = None  # built at the first /openapi.json, every route known
    # Set by create_app right after the context (each needs the app itself).
    metrics: Metrics = field(init=False)
    connection_guard: ConnectionGuard = field(init=False)
    reloader: Reloader = field(init=False)
    heartbeat: Heartbeat = field(init=False)  # this instance's record on a shared store
    _upstream: Upstream | None = None
    _router: Router | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise NotServing("the upstream client exists only while the server runs")
        return self._upstream

    @property
    def router(self) -> Router:
        if self._router is None:
            raise NotServing("the router exists only while the server runs")
        return self._router

    @property
    def serving(self) -> bool:
        return self._router is not None

    def start(self, upstream: Upstream) -> None:
        """Called once the server's loop runs: the pool and the router come to life."""
        self._upstream = upstream
        self._router = Router(upstream, self.state)


App: TypeAlias = Sanic[SanicConfig, AppContext]
AppRequest: TypeAlias = Request[App, SimpleNamespace]
