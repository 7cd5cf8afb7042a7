"""Server-sent events as providers really send them.

An incremental parser (bytes in, events out) that accepts `\\n`, `\\r\\n` and
`\\r` line endings, `data:` with or without the space, multi-line data, `event:`
and `id:` fields, and comment lines (OpenRouter's `: OPENROUTER PROCESSING`
keep-alives). Network chunks may split an event, or a line, anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE = "[DONE]"


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
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._pending_cr = False  # a chunk ended in "\r": a following "\n" belongs to it

    def feed(self, chunk: bytes) -> list[Event]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # an unfinished line waits for the next chunk
        events: list[Event] = []
        for raw in lines:
            event = self._line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[Event]:
        """End of stream: an event not closed by a blank line still counts."""
        events = self.feed(b"\n") if self._buffer else []
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
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        # "retry" and unknown fields are ignored, as the SSE spec says.
        return None

    def _dispatch(self) -> Event:
        event = Event(
            data="\n".join(self._data) if self._data else None, event=self._event, id=self._id
        )
        self._data, self._event, self._id = [], None, None
        return event
