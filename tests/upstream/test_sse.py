"""The SSE parser on what real providers send, split anywhere by the network."""

from __future__ import annotations

import pytest

from chain429.upstream.sse import Event, EventTooLarge, SSEParser

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


def test_an_event_at_the_limit_passes_one_over_it_raises():
    limit = 1000  # counts the field name: "data: " is 6 of it
    at = b"data: " + b"x" * (limit - 6) + b"\n\n"
    assert SSEParser(limit).feed(at) == [Event(data="x" * (limit - 6))]
    two_lines = b"data: " + b"x" * 494 + b"\ndata: " + b"x" * 494 + b"\n\n"
    assert SSEParser(limit).feed(two_lines) == [Event(data="x" * 494 + "\n" + "x" * 494)]
    for over in (at.replace(b"x", b"xx", 1), two_lines.replace(b"x", b"xx", 1)):
        with pytest.raises(EventTooLarge) as caught:
            SSEParser(limit).feed(over)
        assert caught.value.limit == limit


def test_an_endless_line_raises_once_the_limit_is_passed_not_at_its_end():
    parser = SSEParser(10_000)
    parser.feed(b'data: {"ok": 1}\n\n')
    with pytest.raises(EventTooLarge):
        for _ in range(100):  # 100 KB that never ends its line
            parser.feed(b"y" * 1000)
    assert parser._pieces_size <= 11_000  # it stopped holding at the limit


def test_many_data_lines_never_closed_by_a_blank_line_raise():
    parser = SSEParser(10_000)
    with pytest.raises(EventTooLarge):
        for _ in range(1000):
            parser.feed(b"data: " + b"z" * 100 + b"\n")


def test_a_long_line_split_over_many_chunks_is_joined_once_and_exactly():
    payload = b'{"content": "' + b"w" * 50_000 + b'"}'
    data = b"data: " + payload + b"\r\n\r\n"
    chunks = [data[i : i + 777] for i in range(0, len(data), 777)]
    assert parse_all(chunks) == [Event(data=payload.decode())]
