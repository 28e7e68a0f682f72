"""The RFC 6455 frame parser on its own: bytes in, events out, no socket."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.rawws import PROTOCOL_VIOLATIONS, ws_frame
from tornado_ws.core import frames
from tornado_ws.core.frames import BINARY, CLOSE, PING, PONG, TEXT, FrameParser, ProtocolError

LIMIT = 1000


def feed_all(data: bytes, *, step: int | None = None) -> tuple[list[tuple[int, str | bytes]], FrameParser]:
    parser = FrameParser(LIMIT)
    if step is None:
        return parser.feed(data), parser
    events: list[tuple[int, str | bytes]] = []
    for i in range(0, len(data), step):
        events += parser.feed(data[i : i + step])
    return events, parser


def test_every_kind_of_frame_becomes_one_event_in_order() -> None:
    data = (
        ws_frame(0x1, "héllo".encode())
        + ws_frame(0x2, b"\x00\xff")
        + ws_frame(0x9, b"p")
        + ws_frame(0xA, b"q")
        + ws_frame(0x8, b"\x03\xe8bye")
    )
    events, parser = feed_all(data)
    assert events == [(TEXT, "héllo"), (BINARY, b"\x00\xff"), (PING, b"p"), (PONG, b"q"), (CLOSE, b"\x03\xe8bye")]
    assert parser.error is None and parser.buffered == 0


@pytest.mark.parametrize("size", [0, 125, 126, 500, LIMIT])
def test_any_split_of_the_bytes_gives_the_same_events(size: int) -> None:
    payload = ("x" * size).encode()
    data = ws_frame(0x1, payload) + ws_frame(0x9, b"") + ws_frame(0x1, payload)
    whole, _ = feed_all(data)
    for step in (1, 2, 3, 7, 64):
        assert feed_all(data, step=step)[0] == whole == [(TEXT, "x" * size), (PING, b""), (TEXT, "x" * size)]


def test_64_bit_lengths_parse() -> None:
    parser = FrameParser(100_000)
    assert parser.feed(ws_frame(0x2, b"b" * 70_000)) == [(BINARY, b"b" * 70_000)]


def test_a_partial_frame_waits_and_counts_as_buffered() -> None:
    data = ws_frame(0x1, b"abcdef")
    parser = FrameParser(LIMIT)
    assert parser.feed(data[:5]) == []
    assert parser.buffered == 5
    assert parser.feed(data[5:]) == [(TEXT, "abcdef")]


def test_fragments_come_out_as_one_message_with_control_frames_in_between() -> None:
    data = (
        ws_frame(0x1, b'{"a":', fin=False)
        + ws_frame(0x9, b"mid")  # control frames may interleave (RFC 6455 5.4)
        + ws_frame(0x0, b"1", fin=False)
        + ws_frame(0x0, b"}")
        + ws_frame(0x2, b"z", fin=False)
        + ws_frame(0x0, b"z")
    )
    events, parser = feed_all(data, step=3)
    assert events == [(PING, b"mid"), (TEXT, '{"a":1}'), (BINARY, b"zz")]
    assert parser.buffered == 0


def test_utf8_is_checked_on_the_whole_message_not_per_fragment() -> None:
    e_acute = "é".encode()
    data = ws_frame(0x1, e_acute[:1], fin=False) + ws_frame(0x0, e_acute[1:])
    assert feed_all(data)[0] == [(TEXT, "é")]


OVER_THE_LIMIT = {
    "over the limit": ws_frame(0x1, b"x" * (LIMIT + 1)),
    "fragments over the limit": ws_frame(0x1, b"x" * 600, fin=False) + ws_frame(0x0, b"x" * 401),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_VIOLATIONS))
def test_violations_stop_the_parser_with_the_close_code_rfc_6455_asks_for(name: str) -> None:
    data, code = PROTOCOL_VIOLATIONS[name]  # the same table the server is attacked with
    events, parser = feed_all(ws_frame(0x1, b"ok") + data + ws_frame(0x1, b"never"))
    assert events[0] == (TEXT, "ok")  # what came before the violation still counts
    if parser.error is None:  # a close frame: its payload is judged by parse_close
        opcode, payload = events[1]  # (the connection reads nothing after a close frame)
        assert opcode == CLOSE and isinstance(payload, bytes)
        with pytest.raises(ProtocolError) as info:
            frames.parse_close(payload)
        assert info.value.code == code
    else:
        assert events == [(TEXT, "ok")] and parser.error.code == code


@pytest.mark.parametrize("name", sorted(OVER_THE_LIMIT))
def test_a_message_over_the_limit_stops_the_parser_with_1009(name: str) -> None:
    events, parser = feed_all(OVER_THE_LIMIT[name])
    assert events == [] and parser.error is not None and parser.error.code == 1009


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    parser = FrameParser(LIMIT)
    header = ws_frame(0x2, b"", length=10**9)[:14]
    assert parser.feed(header) == []
    assert parser.error is not None and parser.error.code == 1009


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (None, "")),
        (b"\x03\xe8", (1000, "")),
        (b"\x0b\xb8app", (3000, "app")),
        (b"\x13\x87", (4999, "")),
        (b"\x03\xf3", (1011, "")),
    ],
)
def test_valid_close_payloads(payload: bytes, expected: tuple[int | None, str]) -> None:
    assert frames.parse_close(payload) == expected


INVALID_CLOSE = [(b"\x03", 1002), (b"\x03\xed", 1002), (b"\x03\xee", 1002), (b"\x03\xe7", 1002)]
INVALID_CLOSE += [(b"\x13\x88", 1002), (b"\x03\xe8\xff", 1007)]  # 5000 is out of range; a reason that is not UTF-8


@pytest.mark.parametrize(("payload", "code"), INVALID_CLOSE)
def test_invalid_close_payloads(payload: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        frames.parse_close(payload)
    assert info.value.code == code


def test_close_frame_keeps_the_reason_within_125_bytes_and_whole_characters() -> None:
    wire = frames.close_frame(1000, "é" * 100)
    assert wire[0] == 0x88 and wire[1] <= 125
    assert frames.parse_close(wire[2:]) == (1000, "é" * 61)
    assert frames.close_frame(None) == b"\x88\x00"


@pytest.mark.parametrize("unmask", [frames.unmask, frames.python_unmask], ids=["parser's", "pure Python"])
@given(data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
def test_unmask_is_xor_with_the_repeated_key(unmask: Callable[[bytes, bytes], bytes], data: bytes, key: bytes) -> None:
    assert unmask(key, data) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


@given(st.binary(max_size=5000), st.one_of(st.just(b"\x00" * 4), st.binary(min_size=4, max_size=4)))
def test_c_and_pure_python_unmasking_agree(data: bytes, key: bytes) -> None:
    from tornado.speedups import websocket_mask

    assert websocket_mask(key, data) == frames.python_unmask(key, data)


def test_the_parser_unmasks_with_tornados_c_extension() -> None:
    # Canary: without tornado.speedups the parser falls back to pure Python, ~25x slower at
    # 64 KiB, CPU any unauthenticated client can make us spend. This import then fails.
    from tornado.speedups import websocket_mask

    assert frames.unmask is websocket_mask


def test_a_max_size_frame_in_tiny_reads_costs_linear_memory_traffic() -> None:
    # Re-joining the partial frame with each read (buffer = buffer + data) allocates the whole
    # buffer again per read: quadratic. What each feed() allocates is measured, not timed.
    size = 65536
    frame = ws_frame(0x2, bytes(range(256)) * (size // 256))
    chunks = [frame[i : i + 7] for i in range(0, len(frame), 7)]
    parser = FrameParser(size)
    events: list[tuple[int, str | bytes]] = []
    allocated = 0
    tracemalloc.start()
    try:
        for chunk in chunks:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            events += parser.feed(chunk)
            allocated += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert events == [(BINARY, bytes(range(256)) * (size // 256))]
    assert parser.error is None and parser.buffered == 0
    # A few copies of the frame plus a small constant per read (the events list, and what a
    # coverage tracer allocates per call: ~300 bytes); the old parser allocated ~4700 times the
    # frame here (309 MB), the quadratic term this bound (~5 MB) exists to catch.
    assert allocated < 4 * size + 512 * len(chunks)


@given(st.lists(st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.binary(max_size=125)), max_size=8), st.data())
def test_any_valid_stream_in_any_chunks_round_trips(sent: list[tuple[int, bytes]], data: st.DataObject) -> None:
    sent = [(op, p.decode("latin-1").encode() if op == 0x1 else p) for op, p in sent]
    stream = b"".join(ws_frame(op, p) for op, p in sent)
    parser = FrameParser(LIMIT)
    events: list[tuple[int, str | bytes]] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 50))
        events += parser.feed(stream[pos : pos + step])
        pos += step
    assert events == [(op, p.decode() if op == 0x1 else p) for op, p in sent]
    assert parser.error is None and parser.buffered == 0
