"""One instance's line to Redis: scripts by SHA, a breaker, reconnection, wake-ups.

The Redis state store (`redis_store`) asks Redis on every request, so a Redis
that stops answering must not make every request wait for a timeout. The
first failed call opens the breaker: from then on calls fail at once
(`StoreDown`), and one background task alone knocks on Redis again, with a
growing pause (0.1 s doubling to 5 s). When it answers, the scripts are
loaded again (a restarted Redis has forgotten them) and calls go through.

Scripts are loaded once and called by their SHA (`EVALSHA`), so a request
sends a hash, not a page of Lua; a Redis that lost its script cache answers
NOSCRIPT and the script is loaded again, once. Calls made in the same turn
of the event loop leave as one pipeline: under load, the client library's
cost per call (which is most of what the Redis store costs chain429) is paid
once per batch.

Wake-ups: an instance that frees something other instances' queued requests
may be waiting for (a concurrency slot, a probe, a cleared block) publishes
on the namespace's channel from inside its script; every other instance
hears it here and wakes its own queue heads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from chain429.routing.limits import StoreDown
from chain429.routing.redis_scripts import SCRIPTS

log = logging.getLogger("chain429.routing.redis")

T = TypeVar("T")

_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_MAX_CONNECTIONS = 64
_BATCH_TASK = "chain429-redis-batch"
_MAX_IDLE = 16  # batch connections kept open between bursts

# What a call that did not get its answer raises: Redis down, slow, refusing.
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


# A script call waiting to be sent: name, keys, arguments, and its answer to be
# (None for a deferred call: nobody waits for it).
_Call = tuple[str, Sequence[str], Sequence[Any], "asyncio.Future[Any] | None"]

# How late a deferred call (`RedisLink.defer`) may leave when no other call
# comes along to carry it.
DEFER_S = 0.05


def describe_url(url: str) -> str:
    """The URL without its password: what logs and errors may show."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "redis"
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{host}" if at else url


class RedisLink:
    def __init__(self, url: str, *, timeout_s: float, channel: str, instance: str) -> None:
        self.url = url
        self.channel = channel
        self.instance = instance
        self._timeout_s = timeout_s
        self._client: aioredis.Redis | None = None
        self._shas: dict[str, str] = {}
        self._up = False
        self.problem: str | None = "not started"
        self.down_since: float | None = None
        self.failures = 0  # outages since start, for metrics
        # Called when another instance says waiting requests may go, and when
        # Redis is back (what waited for it may go too).
        self.on_wake: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._resubscribe = asyncio.Event()
        self._closed = False
        self._batch: list[_Call] = []  # script calls waiting for this turn's pipeline
        self._deferred: list[_Call] = []  # calls riding with the next batch
        self._idle: list[Any] = []  # connections of our own for the batches, idle
        self._sending = asyncio.Semaphore(_MAX_CONNECTIONS)  # batches on the wire at once
        self._defer_timer: asyncio.TimerHandle | None = None

    @property
    def up(self) -> bool:
        return self._up

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreDown("the Redis state store is not started")
        return self._client

    # -- life ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or start knocking, if Redis does not answer) and listen for wake-ups."""
        # The URL's own `?socket_timeout=0.5` (and the like) wins over these defaults.
        # A burst waits for one of a bounded set of connections (batching keeps
        # few busy) rather than failing, as redis-py's plain pool does past its cap.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=_MAX_CONNECTIONS,
            timeout=self._timeout_s,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            # Failing fast is the breaker's job; a retry would only double the wait.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=30,
        )
        self._client = aioredis.Redis.from_pool(pool)
        try:
            await self._load_scripts()
        except _FAILURES as exc:
            self._down(exc)
        else:
            self._up, self.problem = True, None
            log.info("rate-limit state: shared through %s", describe_url(self.url))
        self._spawn(self._listen(), "chain429-redis-wakeups")

    async def aclose(self) -> None:
        await self.flush()
        # Calls on their way (a finish, a record) are let through, for a moment.
        sending = [t for t in self._tasks if t.get_name() == _BATCH_TASK]
        if sending:
            await asyncio.wait(sending, timeout=self._timeout_s)
        self._closed = True
        if self._defer_timer is not None:
            self._defer_timer.cancel()
        tasks = [*self._tasks, *([self._reconnecting] if self._reconnecting else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in self._idle:
            with contextlib.suppress(*_FAILURES):
                await conn.disconnect()
        self._idle.clear()
        if self._client is not None:
            with contextlib.suppress(*_FAILURES):
                await self._client.aclose()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls ---------------------------------------------------------------

    async def _load_scripts(self) -> None:
        client = self.client
        for name, source in SCRIPTS.items():
            self._shas[name] = await client.script_load(source)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script atomically; StoreDown if Redis cannot answer now.

        Calls made in the same turn of the event loop (concurrent requests)
        leave together, as one pipeline: one write, one read, and the client
        library's per-call cost paid once per batch instead of once per call.
        """
        if not self._up:
            raise StoreDown(self.problem or "Redis is unreachable")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._batch.append((name, keys, args, done))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return await done

    def defer(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Send a call nobody waits for with the next batch, or within DEFER_S.

        A request's finish rides with the next request's reserve: one round
        trip per request instead of two, when nothing needs the finish at once.
        Lost if Redis is down (what it would have freed expires by itself).
        """
        if not self._up:
            return
        self._deferred.append((name, keys, args, None))
        if self._defer_timer is None:
            self._defer_timer = asyncio.get_running_loop().call_later(DEFER_S, self._send_batch)

    async def flush(self) -> None:
        """Send the deferred calls now (stopping)."""
        batch, self._deferred = self._deferred, []
        if batch and self._up:
            await self._run_batch(batch)

    def _send_batch(self) -> None:
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        batch = [*self._deferred, *self._batch]
        self._deferred, self._batch = [], []
        if batch:
            self._spawn(self._run_batch(batch), _BATCH_TASK)

    async def _run_batch(self, batch: list[_Call]) -> None:
        try:
            async with self._sending:
                results = await self._pipeline(batch)
        except _FAILURES as exc:
            self._down(exc)
            results = [exc] * len(batch)
        for (_, _, _, done), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException) and isinstance(result, _FAILURES):
                self._down(result)
            if done is None or done.done():  # deferred, or its request was cancelled
                continue
            if isinstance(result, BaseException):
                done.set_exception(StoreDown(self.problem or "Redis is unreachable"))
            else:
                done.set_result(result)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """The batch's EVALSHAs in one write, then their answers (an error is an answer).

        On a connection of our own rather than redis-py's Pipeline: the request
        path pays for this per call, and the Pipeline's bookkeeping cost more
        than the round trip it saves.
        """
        conn = self._idle.pop() if self._idle else None
        if conn is None:
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
        results: list[Any] = []
        try:
            commands = [
                ("EVALSHA", self._shas[name], len(keys), *keys, *args)
                for name, keys, args, _ in batch
            ]
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            for _ in batch:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # this call's own error; the others stand
                    results.append(exc)
        except BaseException:
            await conn.disconnect()
            raise
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            await conn.disconnect()
        if any(isinstance(r, NoScriptError) for r in results):
            await self._load_scripts()  # Redis forgot them: load, and run those again
            for index, result in enumerate(results):
                if isinstance(result, NoScriptError):
                    name, keys, args, _ = batch[index]
                    results[index] = await self._evalsha(self.client, name, keys, args)
        return results

    async def _evalsha(
        self, client: Any, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted, or SCRIPT FLUSH: load them all again
            await self._load_scripts()
            return await client.evalsha(self._shas[name], len(keys), *keys, *args)

    async def run(self, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run `call(client)` unless the breaker is open; a failure opens it."""
        if not self._up:
            raise StoreDown(self.problem or "Redis is unreachable")
        try:
            return await call(self.client)
        except _FAILURES as exc:
            self._down(exc)
            raise StoreDown(self.problem or "Redis is unreachable") from exc

    def sha(self, name: str) -> str:
        return self._shas[name]

    # -- the breaker -----------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        # A refusal (out of memory, a read-only replica, a script error) is not a
        # network problem, but the answer is the same: do without Redis for now.
        what = "refused a call" if isinstance(exc, ResponseError) else "unreachable"
        reason = f"Redis {what} ({type(exc).__name__})"
        if self._up or self.down_since is None:
            # Once per outage: the request path stays quiet after this.
            log.warning(
                "rate-limit state: %s at %s: %s; retrying in the background",
                reason,
                describe_url(self.url),
                exc,
            )
            self.down_since = time.time()
            self.failures += 1
        self._up = False
        self.problem = reason
        if not self._closed and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        pause = _BACKOFF_FIRST_S
        while not self._closed:
            await asyncio.sleep(pause)
            try:
                # Fresh connections: those of the outage may be half-dead.
                await self.client.connection_pool.disconnect()
                idle, self._idle = self._idle, []
                for conn in idle:
                    await conn.disconnect()
                await self.client.ping()
                await self._load_scripts()
            except _FAILURES:
                pause = min(pause * 2, _BACKOFF_MAX_S)
                continue
            outage = time.time() - (self.down_since or time.time())
            self._up, self.problem, self.down_since = True, None, None
            log.warning("rate-limit state: Redis is back after %.1f s; sharing again", outage)
            self._resubscribe.set()
            if self.on_wake is not None:
                self.on_wake()
            return

    # -- wake-ups --------------------------------------------------------------

    async def _listen(self) -> None:
        """Hear other instances' wake-ups; resubscribe after an outage."""
        pause = _BACKOFF_FIRST_S
        while not self._closed:
            if not self._up:
                await asyncio.sleep(0.2)
                continue
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._resubscribe.clear()
                pause = _BACKOFF_FIRST_S
                while not self._closed and not self._resubscribe.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if message.get("data") != self.instance and self.on_wake is not None:
                        self.on_wake()
            except _FAILURES:
                await asyncio.sleep(pause)
                pause = min(pause * 2, _BACKOFF_MAX_S)
            finally:
                with contextlib.suppress(*_FAILURES):
                    await pubsub.aclose()
