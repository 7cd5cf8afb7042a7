"""Which entries may be asked right now: cooldowns and health, behind one interface.

The router asks `check` before each upstream call and reports every outcome
with `record`. State is keyed by scope: a whole provider (a bad key, an empty
wallet) or one (provider, model) entry (a 429, an unknown model). The memory
store is the default; a shared store (Redis) implements the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chain429.outcome import SKIP_REASON, CooldownPolicy, Kind, Outcome, Scope


@dataclass(frozen=True, slots=True)
class Block:
    reason: str  # "cooldown", "quota", "unhealthy": shown as skip:<reason>
    until: float  # epoch seconds
    scope: Scope
    detail: str = ""


class StateStore(Protocol):
    async def check(self, provider_id: str, model: str, now: float) -> Block | None:
        """The block that stops this entry now, or None if it may be asked."""

    async def record(self, provider_id: str, model: str, outcome: Outcome) -> Block | None:
        """Apply an outcome; returns the block now in force because of it, if any."""

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every block still in force, for /v1/ratelimits."""

    async def record_stream_end(
        self, provider_id: str, model: str, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        """Count a stream that died after its first token (or reset the count on a clean one)."""


def _key(scope: Scope, provider_id: str, model: str) -> tuple[str, str]:
    return (provider_id, model if scope is Scope.ENTRY else "")


class MemoryStateStore:
    """Process-local state; the single-instance default."""

    def __init__(self) -> None:
        self._blocks: dict[tuple[str, str], Block] = {}
        self._stream_failures: dict[tuple[str, str], int] = {}

    async def check(self, provider_id: str, model: str, now: float) -> Block | None:
        if not self._blocks:  # the common case: nothing is cooling down
            return None
        found: Block | None = None
        for key in ((provider_id, ""), (provider_id, model)):
            block = self._blocks.get(key)
            if block is None:
                continue
            if block.until <= now:
                del self._blocks[key]
            elif found is None or block.until > found.until:
                found = block
        return found

    async def record(self, provider_id: str, model: str, outcome: Outcome) -> Block | None:
        reason = SKIP_REASON.get(outcome.kind)
        if reason is None or outcome.until is None:
            return None
        return self._block(_key(outcome.scope, provider_id, model), reason, outcome)

    def _block(self, key: tuple[str, str], reason: str, outcome: Outcome) -> Block:
        assert outcome.until is not None
        current = self._blocks.get(key)
        # A new cooldown never shortens a longer one already in force.
        if current is not None and current.until >= outcome.until:
            return current
        block = Block(reason, outcome.until, outcome.scope, outcome.reason)
        self._blocks[key] = block
        return block

    async def record_stream_end(
        self, provider_id: str, model: str, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        key = (provider_id, model)
        if clean:
            self._stream_failures.pop(key, None)
            return None
        failures = self._stream_failures.get(key, 0) + 1
        self._stream_failures[key] = failures
        rest_s = policy.mid_stream_cooldown_s(failures)
        if rest_s is None:
            return None
        outcome = Outcome(
            Kind.TRANSIENT,
            "stream",
            until=now + rest_s,
            reason=f"{failures} streams in a row died mid-answer",
        )
        return self._block(key, "unstable", outcome)

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "provider": provider_id,
                "model": model or None,
                "scope": block.scope.value,
                "reason": block.reason,
                "detail": block.detail,
                "until": block.until,
                "remaining_ms": int((block.until - now) * 1000),
            }
            for (provider_id, model), block in sorted(self._blocks.items())
            if block.until > now
        ]
