"""Queue mode across two instances: a slot freed on one wakes the line on the other.

A request queued on instance B because the entry's one concurrency slot is
held by a request on instance A must go as soon as A's request ends, not
when B's own fallback timer (5 s for a concurrency slot) fires: A publishes
on the namespace's channel, B hears it and wakes the head of its line.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from chain429.fakes.provider import Reply
from chain429.routing.buckets import CONCURRENCY_RETRY_S
from fixtures.redis import REDIS_URL
from fixtures.servers import chain_config, provider_entry

HELD_S = 1.0  # how long A's request holds the slot


def test_a_slot_freed_on_one_instance_wakes_the_queue_on_the_other(fake, proxy, redis_ns):
    slow = fake("slow")
    slow.script(Reply(delay=HELD_S))
    config = chain_config(
        [provider_entry("slow", slow, rateLimits={"concurrentRequests": 1})],
        [("slow", "m")],
        settings={
            "stateStore": REDIS_URL,
            "stateNamespace": redis_ns,
            "queueMode": True,
            "queueMaxWaitMs": 20000,
        },
    )
    a, b = proxy(config), proxy(config)
    results: dict[str, Any] = {}

    def ask(name: str, p: Any) -> None:
        started = time.monotonic()
        reply = p.openai().chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": name}]
        )
        results[name] = (reply.http_response.status_code, time.monotonic() - started)

    holder = threading.Thread(target=ask, args=("a", a))
    holder.start()
    deadline = time.monotonic() + 10
    while not slow.requests:
        assert time.monotonic() < deadline, "a never reached the provider"
        time.sleep(0.01)
    ask("b", b)  # queued on b until a's request ends
    holder.join(timeout=10)

    assert results["a"][0] == results["b"][0] == 200
    assert len(slow.requests) == 2
    # b went when a finished (about HELD_S after it started), not at its 5 s fallback.
    assert results["b"][1] < HELD_S + 1.5 < CONCURRENCY_RETRY_S, results
