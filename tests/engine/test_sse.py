"""The SSE parser on what real providers send, split anywhere by the network."""

from __future__ import annotations

import pytest

from chain429.sse import Event, SSEParser

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a": 1}\n\n'
    b'data:{"b": 2}\n\n'
    b"event: message\nid: 7\ndata: line one\ndata: line two\n\n"
    b"retry: 1000\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    Event(comment=" OPENROUTER PROCESSING"),
    Event(data='{"a": 1}'),
    Event(data='{"b": 2}'),
    Event(data="line one\nline two", event="message", id="7"),
    Event(data="[DONE]"),
]


def parse_all(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.close()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_framings(newline):
    assert parse_all([STREAM.replace(b"\n", newline)]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte(newline):
    data = STREAM.replace(b"\n", newline)
    assert parse_all([data[i : i + 1] for i in range(len(data))]) == EXPECTED


def test_split_between_cr_and_lf_is_one_line_end():
    assert parse_all([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"]) == [
        Event(data="x"),
        Event(data="y"),
    ]


def test_unterminated_last_event_is_flushed_on_close():
    assert parse_all([b'data: {"last": true}']) == [Event(data='{"last": true}')]


def test_utf8_split_inside_a_character():
    data = 'data: {"content": "héllo ✓"}\n\n'.encode()
    cut = data.index("✓".encode()) + 1
    assert parse_all([data[:cut], data[cut:]]) == [Event(data='{"content": "héllo ✓"}')]


def test_encode_round_trips():
    for event in EXPECTED:
        assert parse_all([event.encode()]) == [event]
