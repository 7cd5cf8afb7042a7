"""Pauses: a person's "skip this until I say so", on a whole provider or on one entry.

`chain429 entry pause groq` (or `groq/llama-3.3-70b-versatile`) has the
server skip a provider or one entry without editing the config. Every path
that asks an entry asks the state store first (the plain and the streaming
walk, a stream's continuation, the probe after a cooldown), and the store
answers a paused entry with a `skip:paused` block before anything else. A
pause is not a failure: it sets no cooldown, counts toward no breaker, and
has no recovery time, so a request never queues for a paused entry (when
every entry is paused the answer is a 503 at once). Chain tests, which ignore
cooldowns on purpose, do not call a paused entry either: a pause is a
person's "do not send there", often to stop spending.

A pause has no end of its own: it lasts until resumed, through restarts.
It names a provider or an entry of the config, so it ends when the config
no longer has what it names (the provider removed, or the entry in no chain),
noticed by a reload or at start: a provider removed and added back starts
unpaused, and no pause waits hidden for a name the config does not show.
A provider's key or URL changing keeps its pause: the person's call stands.

Pauses live where limit state lives. The memory store keeps them in a
`Pauses` and saves them with its other state to the request log's database;
the Redis store keeps them in one hash every instance reads, so a pause made
on one instance holds on all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chain429.routing.runtime import Snapshot

__all__ = [
    "PAUSED_PREFIX",
    "Pause",
    "PauseScope",
    "Pauses",
    "ended_by_resume",
    "pause_key",
    "stale_pauses",
]

# The prefix of a pause's key in `export_state` (a row of `provider_state`).
PAUSED_PREFIX = "paused:"

PauseScope = Literal["provider", "entry"]


def pause_key(provider_id: str, model: str | None = None) -> str:
    """The scope key a pause is kept under: that of the provider, or of the entry
    (the same keys the state store's blocks use: `limits.scope_keys`)."""
    return f"provider:{provider_id}" if model is None else f"entry:{provider_id}/{model}"


def ended_by_resume(key: str, provider_id: str, model: str | None) -> bool:
    """Whether resuming `provider_id` (or its entry `model`) ends the pause kept under
    `key`: an entry's resume ends that entry's pause; a provider's ends the provider's
    own and every one of its entries'."""
    if model is not None:
        return key == pause_key(provider_id, model)
    return key == pause_key(provider_id) or key.startswith(f"entry:{provider_id}/")


@dataclass(frozen=True, slots=True)
class Pause:
    key: str  # `provider:groq` or `entry:groq/llama-3.3-70b`
    since: float  # epoch seconds
    by: str  # the caller's label (`admin#1`, `open`): never a key

    @property
    def scope(self) -> PauseScope:
        return "provider" if self.key.startswith("provider:") else "entry"

    @property
    def label(self) -> str:
        """`groq`, or `groq/llama-3.3-70b`: as the trace and `chain429 entry` name it."""
        return self.key.partition(":")[2]

    @property
    def provider(self) -> str:
        return self.label.partition("/")[0]  # provider ids have no slash (config/model.py)

    @property
    def model(self) -> str | None:
        return self.label.partition("/")[2] if self.scope == "entry" else None

    def describe(self) -> str:
        """What a skip says about it (the trail's `reason`, `status`'s REASON)."""
        what = "provider" if self.scope == "provider" else "entry"
        return f"{what} {self.label} paused by {self.by}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "provider": self.provider,
            "model": self.model,
            "since": self.since,
            "by": self.by,
        }


class Pauses:
    """The pauses in force, for the memory store."""

    def __init__(self, pauses: Iterable[Pause] = ()) -> None:
        self._in_force: dict[str, Pause] = {pause.key: pause for pause in pauses}

    def find(self, provider_key: str, entry_key: str) -> Pause | None:
        """The pause that stops an entry: its provider's, else its own."""
        return self._in_force.get(provider_key) or self._in_force.get(entry_key)

    def add(self, key: str, by: str, now: float) -> tuple[Pause, bool]:
        """Pause `key`; an earlier pause stays as it was. The pause, and whether it is new."""
        found = self._in_force.get(key)
        if found is not None:
            return found, False
        pause = self._in_force[key] = Pause(key, now, by)
        return pause, True

    def remove(self, provider_id: str, model: str | None) -> int:
        """End the pauses a resume of `provider_id` (or its entry `model`) ends; how many."""
        ended = [key for key in self._in_force if ended_by_resume(key, provider_id, model)]
        for key in ended:
            del self._in_force[key]
        return len(ended)

    def all(self) -> list[Pause]:
        return [self._in_force[key] for key in sorted(self._in_force)]

    def export(self) -> dict[str, dict[str, Any]]:
        """One JSON-able item per pause, under PAUSED_PREFIX + its key."""
        return {
            PAUSED_PREFIX + key: {"since": pause.since, "by": pause.by}
            for key, pause in self._in_force.items()
        }

    def restore(self, key: str, data: Mapping[str, Any]) -> bool:
        """Take back an exported item (`key` without the prefix); raises ValueError
        (or KeyError, TypeError) for one that is malformed."""
        if not key.startswith(("provider:", "entry:")) or not key.partition(":")[2]:
            raise ValueError("unknown pause scope")
        since, by = float(data["since"]), data["by"]
        if not isinstance(by, str):
            raise TypeError("'by' is not a string")
        self._in_force.setdefault(key, Pause(key, since, by))
        return True


def stale_pauses(snapshot: Snapshot, pauses: list[Pause]) -> list[Pause]:
    """The pauses that name nothing in the config: a provider it no longer has, or an
    entry no chain has. They end (see the module docstring)."""
    providers = {provider.id for provider in snapshot.config.providers}
    entries = {
        (entry.provider_id, entry.model)
        for chain in snapshot.chains.values()
        for entry in chain.entries
    }
    return [
        pause
        for pause in pauses
        if pause.provider not in providers
        or (pause.model is not None and (pause.provider, pause.model) not in entries)
    ]
