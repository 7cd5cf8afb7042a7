"""Server-sent events as providers really send them.

An incremental parser (bytes in, events out) that accepts `\\n`, `\\r\\n` and
`\\r` line endings, `data:` with or without the space, multi-line data, `event:`
and `id:` fields, and comment lines (OpenRouter's `: OPENROUTER PROCESSING`
keep-alives). Network chunks may split an event, or a line, anywhere.

What it holds is bounded: a line, or the data lines of one event together,
longer than `max_event_bytes` (field names counted, line ends not) raises
`EventTooLarge` as soon as the parser has seen that much, so a provider cannot
make chain429 buffer an endless line or event. The check is a length
comparison per chunk and per data line, never a re-scan.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

DONE = "[DONE]"
# Searched for as ints: `b"\n" in data` first tries the needle as an int, and
# raising and clearing that TypeError costs more than the search itself.
_LF, _CR = ord("\n"), ord("\r")


class EventTooLarge(ValueError):
    """An SSE event (or line) longer than the parser's `max_event_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"an SSE event of at least {size} bytes (limit {limit})")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Event:
    data: str | None = None  # None: the event had no data field (a lone comment, say)
    event: str | None = None
    id: str | None = None
    comment: str | None = None  # set for a comment line; such events carry nothing else

    def encode(self) -> bytes:
        """The event in canonical framing, for relaying."""
        if self.comment is not None:
            return f":{self.comment}\n\n".encode()
        lines = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.data is not None:
            lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


def data_event(payload: bytes | str) -> bytes:
    """One `data:` event with a single-line payload (JSON never holds raw newlines)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return b"data: " + payload + b"\n\n"


DONE_EVENT = data_event(DONE)


class SSEParser:
    def __init__(self, max_event_bytes: int = sys.maxsize) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""
        # Pieces of one long unfinished line, joined once its end arrives (so a
        # line split over many chunks is copied once, not once per chunk).
        self._pieces: list[bytes] = []
        self._pieces_size = 0
        self._data: list[str] = []
        self._data_size = 0  # characters of the data lines of the event being built
        self._event: str | None = None
        self._id: str | None = None
        self._pending_cr = False  # a chunk ended in "\r": a following "\n" belongs to it

    def feed(self, chunk: bytes) -> list[Event]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        if _LF not in chunk and _CR not in chunk:  # the middle of a line
            self._pieces.append(chunk)
            self._pieces_size += len(chunk)
            self._check(len(self._buffer) + self._pieces_size)
            return []
        if self._pieces:
            buffer = b"".join((self._buffer, *self._pieces, chunk))
            self._pieces, self._pieces_size = [], 0
        else:
            buffer = self._buffer + chunk
        if _CR in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # an unfinished line waits for the next chunk
        if len(buffer) > self.max_event_bytes:  # rare: only then look at each line
            self._check(max(len(self._buffer), max(map(len, lines), default=0)))
        events: list[Event] = []
        for raw in lines:
            event = self._line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[Event]:
        """End of stream: an event not closed by a blank line still counts."""
        events = self.feed(b"\n") if self._buffer or self._pieces else []
        if self._data or self._event is not None:
            events.append(self._dispatch())
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if self._data or self._event is not None or self._id is not None:
                return self._dispatch()
            return None
        if line.startswith(":"):
            return Event(comment=line[1:])
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_size += len(line)
            if self._data_size > self.max_event_bytes:  # many lines, never a blank one
                self._check(self._data_size)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        # "retry" and unknown fields are ignored, as the SSE spec says.
        return None

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLarge(size, self.max_event_bytes)

    def _dispatch(self) -> Event:
        event = Event(
            data="\n".join(self._data) if self._data else None, event=self._event, id=self._id
        )
        self._data, self._data_size, self._event, self._id = [], 0, None, None
        return event
