"""Putting the app on a socket: the foreground server and an in-thread one.

`serve` is what `chain429 serve` runs: one process, Sanic's own signal
handling for a graceful stop. `ServerThread` runs the same app on its own
event loop in a background thread, for tests and tools that need a real
server next to their own code.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chain429.config.model import Config
from chain429.requestlog.database import DatabaseError, describe, migrate, open_database, scrub
from chain429.requestlog.writer import Telemetry
from chain429.routing.limits import StateStore
from chain429.routing.memory_store import MemoryStateStore
from chain429.server.auth import exposure_problem
from chain429.server.connections import server_options
from chain429.server.context import App
from chain429.server.worker_manager import StopSignals

log = logging.getLogger("chain429")


class ExposureError(Exception):
    """Serving without keys anywhere but loopback would open the proxy to the network."""


def resolve_bind(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Flags win over 429chain's PORT variable, which wins over the file."""
    environ = os.environ if environ is None else environ
    settings = config.settings
    if port is None and environ.get("PORT"):
        try:
            port = int(environ["PORT"])
        except ValueError:
            raise ValueError(f"PORT must be a number, got {environ['PORT']!r}") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"PORT must be 0 to 65535, got {port}")
    return host or settings.host, port if port is not None else settings.port


def check_exposure(config: Config, host: str) -> None:
    problem = exposure_problem(config, host)
    if problem is not None:
        raise ExposureError(f"refusing to serve {problem}")


def announce_open_access(config: Config, host: str) -> None:
    if config.settings.api_keys and not config.settings.admin_keys:
        log.warning(
            "no settings.adminKeys configured: proxy keys may read the admin API and stats "
            "but not change the config; add adminKeys to edit through the API"
        )
    if config.clients and not (config.settings.api_keys or config.settings.admin_keys):
        log.warning(
            "clients configured without settings.adminKeys: no key may read the admin API or "
            "stats (a client's key never does); add adminKeys to use them"
        )
    if not config.settings.api_keys and not config.clients:
        log.warning(
            "no settings.apiKeys configured: serving without authentication on %s "
            "(loopback only; requests must name a loopback Host, and web pages are refused)",
            host,
        )


class RequestLogError(Exception):
    """The request log's database could not be opened or migrated."""


def open_request_log(config: Config) -> Telemetry:
    """The request log the settings ask for: SQLite by default, PostgreSQL by URL."""
    settings = config.settings
    try:
        database = open_database(settings.database_url, db_path=settings.db_path)
        migrate(database)
    except (ValueError, DatabaseError, OSError) as err:
        raise RequestLogError(f"request log: {scrub(str(err))}") from None
    log.info("request log: %s", describe(database))
    return Telemetry(
        database,
        buffer_size=settings.log_buffer_size,
        retention_days=settings.log_retention_days,
    )


# The shared state store's URL from the environment, over settings.stateStore:
# a deployment points every instance at its Redis without editing the file.
STATE_URL_ENV = "CHAIN429_STATE_URL"


def open_state_store(config: Config, environ: Mapping[str, str] | None = None) -> StateStore:
    """The state store the settings ask for: this process's memory, or Redis by URL.

    Nothing connects here: the Redis store connects when the server starts (on
    its event loop), and a Redis that is down then is handled like one that
    goes down later (`stateStoreFailure`).
    """
    environ = os.environ if environ is None else environ
    settings = config.settings
    url = environ.get(STATE_URL_ENV) or settings.state_store
    if not url:
        return MemoryStateStore()
    from chain429.routing.redis_link import describe_url  # only now: see limits.shared_store
    from chain429.routing.redis_store import RedisStateStore

    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"{STATE_URL_ENV} must be a redis://, rediss:// or unix:// URL, "
            f"got {describe_url(url)!r}"
        )
    return RedisStateStore(
        url,
        namespace=settings.state_namespace,
        failure=settings.state_store_failure,
        lease_s=settings.state_lease_ms / 1000,
    )


class PortInUse(OSError):
    """Another program listens on the port already."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, before Sanic starts: a port in use is one PortInUse
    (not a log line from inside Sanic), and port 0 becomes a port to name.

    It does not listen yet: the event loop does, when the server starts serving,
    so no client is taken in (and answered) while the server is still starting.
    """
    try:  # as Sanic's bind_socket does, without its listen()
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(err.errno, f"port {port} is in use") from None
        raise
    return sock


def serve(
    app: App,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    sock: socket.socket | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run in the foreground until SIGINT/SIGTERM, then stop gracefully.

    `sock` is a socket from `bind` (else one is bound here); `ready` is told
    the port once the server accepts connections, and not before.
    """
    sock = sock if sock is not None else bind(host, port)
    # Sanic's hint to use --debug or --dev names flags chain429 does not have.
    os.environ.setdefault("SANIC_IGNORE_PRODUCTION_WARNING", "1")
    # With one app in the process, Sanic's touchup can compile out the lifecycle
    # signals nobody listens to: about an eighth of the CPU per request (bench/).
    app.config.TOUCHUP = True
    app.ctx.bind_host = host
    app.after_server_start(freeze_startup_heap)
    if ready is not None:
        bound: int = sock.getsockname()[1]

        async def announce(app: App, _: Any = None) -> None:
            loop = asyncio.get_running_loop()

            def when_running() -> None:
                # Once Sanic's start-up is over: a Ctrl-C it takes during its
                # start-up listeners is lost, so "serving" must not invite one.
                if app.state.is_running:
                    ready(bound)
                else:
                    loop.call_later(0.005, when_running)

            when_running()

        app.after_server_start(announce)
    try:
        app.run(
            sock=sock,
            single_process=True,
            access_log=access_log,
            motd=False,
            verbosity=0,
            **server_options(app),
        )
    finally:
        sock.close()


async def freeze_startup_heap(app: App, _: Any = None) -> None:
    """Leave what start-up built (modules, the app, the config) out of the garbage collector.

    Python's full collections walk every tracked object, and a started server
    holds a few hundred thousand that live as long as it does: each full pass
    stalled every request in flight for tens of milliseconds. Frozen objects are
    still freed when nothing refers to them; only a cycle among them would stay.
    Measured (bench/run.py, plain, c=32): p99 44.5 ms -> 7.8 ms, +19% requests/s.
    """
    gc.collect()
    gc.freeze()


# The app's name in every worker: Sanic's manager finds each worker's app by it.
WORKERS_APP = "chain429"


class NeedsSharedStore(Exception):
    """`--workers` above 1 without a shared state store (see `check_workers`)."""


def check_workers(config: Config, workers: int, environ: Mapping[str, str] | None = None) -> None:
    """Several workers share limits only through Redis: without it, refuse to start.

    Each worker is its own process with its own memory: with the memory store
    each would keep its own limits, and an entry limited to 20 requests a
    minute could take 20 per worker (and each would ignore the others' 429s).
    """
    environ = os.environ if environ is None else environ
    if workers <= 1 or environ.get(STATE_URL_ENV) or config.settings.state_store:
        return
    raise NeedsSharedStore(
        f"--workers {workers} needs a shared state store: each worker is its own process, and "
        "with the memory store each would keep its own limits (an entry limited to 20 "
        "requests a minute could take 20 per worker). Set settings.stateStore: "
        f"redis://127.0.0.1:6379/0 (or ${STATE_URL_ENV}); see docs/scaling.md"
    )


def worker_app(config_path: Path, bind_host: str, announce: str) -> App:
    """One worker's app, built inside the worker process (Sanic's loader calls this there).

    Each worker reads the config file, opens its own request log connection
    (its own records; retention takes the database's lock, see
    `requestlog.database.claim_retention`) and its own link to Redis, where
    the limits are shared. `announce` is printed once the worker serves.
    """
    from chain429.config.loader import load_config
    from chain429.server import logs
    from chain429.server.app import create_app

    config = load_config(config_path)
    logs.configure(config.settings.log_level, config.settings.log_format)
    app = create_app(
        config, config_path=config_path, telemetry=open_request_log(config), name=WORKERS_APP
    )
    app.config.TOUCHUP = True  # one app in the process: see `serve`
    app.ctx.bind_host = bind_host
    app.after_server_start(freeze_startup_heap)
    if announce:

        async def ready(app: App, _: Any = None) -> None:
            sys.stderr.write(f"{announce} (worker pid {os.getpid()})\n")
            sys.stderr.flush()

        app.after_server_start(ready)
    return app


def serve_workers(
    config_path: Path,
    host: str,
    workers: int,
    *,
    sock: socket.socket,
    access_log: bool = False,
    announce: str = "",
) -> None:
    """Run `workers` processes on one socket until SIGINT/SIGTERM, with Sanic's worker manager.

    This process binds the socket and manages; each worker (spawned: a fresh
    interpreter, nothing inherited but the socket) builds its own app with
    `worker_app` and accepts on the shared socket, so the kernel spreads
    connections over the workers. SIGTERM stops every worker gracefully:
    in-flight requests finish and each worker writes its last records.
    """
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    os.environ.setdefault("SANIC_IGNORE_PRODUCTION_WARNING", "1")
    loader = AppLoader(factory=functools.partial(worker_app, config_path, host, announce))
    # From here a stop is noted and acted on where the manager waits (worker_manager.py).
    try:
        with StopSignals() as stop_signals:
            primary = loader.load()  # the manager's copy: it never serves a request
            primary.main_process_ready(stop_signals.manage)
            primary.prepare(
                sock=sock,
                workers=workers,
                access_log=access_log,
                motd=False,
                verbosity=0,
                **server_options(primary),
            )
            Sanic.serve(primary=primary, app_loader=loader)
    finally:
        sock.close()


class ServerThread:
    """Serve an app on 127.0.0.1 from a background thread; `port=0` picks a free port."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        app.ctx.bind_host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(512)
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self._server = self.call(self._start())
        return self

    async def _start(self) -> Any:
        server = await self.app.create_server(
            sock=self._sock,
            return_asyncio_server=True,
            access_log=False,
            **server_options(self.app),
        )
        assert server is not None
        await server.startup()
        await server.before_start()
        await server.after_start()
        await server.start_serving()
        return server

    def stop(self) -> None:
        if self._loop.is_closed():
            return  # already stopped
        if self._server is not None:
            self.call(self._stop(self._server))
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._sock.close()

    @staticmethod
    async def _stop(server: Any, grace_s: float = 10.0) -> None:
        """Sanic's graceful stop: finish in-flight requests, then close what is left."""
        await server.before_stop()
        server.close()
        await server.wait_closed()
        connections = server.connections
        for connection in list(connections):
            connection.close_if_idle()
        deadline = asyncio.get_running_loop().time() + grace_s
        while connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            for connection in list(connections):
                connection.close_if_idle()
        for connection in list(connections):
            connection.abort()
        await asyncio.sleep(0)  # let the aborted connections' tasks end
        await server.after_stop()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
