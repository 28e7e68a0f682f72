"""Invalid UTF-8 is refused as soon as the bytes so far make it invalid (Autobahn 6.4.*), not
when the message completes; valid text comes out the same however it is split."""

from __future__ import annotations

import codecs
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.rawws import ws_frame
from tornado_ws.core import frames
from tornado_ws.core.frames import TEXT, FrameParser

LIMIT = 1000
#: Autobahn 6.4.1's message: valid, then U+110000 (out of range: invalid at its second byte), then valid.
KOSME = "κόσμε".encode()
OUT_OF_RANGE = b"\xf4\x90\x80\x80"
EDITED = b"edited"


def first_invalid_prefix(payload: bytes) -> int | None:
    """How many bytes CPython's incremental decoder needs to see that ``payload`` is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for i in range(len(payload)):
        try:
            decoder.decode(payload[i : i + 1], False)
        except UnicodeDecodeError:
            return i + 1
    try:
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        return len(payload)
    return None


def test_a_fragment_that_makes_the_message_invalid_is_refused_before_the_rest() -> None:
    parser = FrameParser(LIMIT)
    assert parser.feed(ws_frame(0x1, KOSME, fin=False)) == [] and parser.error is None
    assert parser.feed(ws_frame(0x0, OUT_OF_RANGE, fin=False)) == []
    assert parser.error is not None and parser.error.code == 1007


def test_a_fragment_that_ends_inside_a_sequence_is_fine_until_the_next_breaks_it() -> None:
    parser = FrameParser(LIMIT)
    parser.feed(ws_frame(0x1, KOSME + OUT_OF_RANGE[:1], fin=False))  # 0xf4 may start a valid sequence
    assert parser.error is None
    parser.feed(ws_frame(0x0, OUT_OF_RANGE[1:2], fin=False))  # 0x90 cannot follow it (Autobahn 6.4.2)
    assert parser.error is not None and parser.error.code == 1007


def test_a_chop_of_one_frame_that_makes_it_invalid_is_refused_before_the_rest() -> None:
    frame = ws_frame(0x1, KOSME + OUT_OF_RANGE + EDITED)
    head = 6
    parser = FrameParser(LIMIT)
    assert parser.feed(frame[:head]) == [] and parser.error is None
    assert parser.feed(frame[head : head + len(KOSME)]) == [] and parser.error is None  # Autobahn 6.4.3
    parser.feed(frame[head + len(KOSME) : head + len(KOSME) + 2])
    assert parser.error is not None and parser.error.code == 1007


def test_a_message_that_ends_inside_a_sequence_is_refused() -> None:
    parser = FrameParser(LIMIT)
    parser.feed(ws_frame(0x1, KOSME, fin=False) + ws_frame(0x0, OUT_OF_RANGE[:2]))
    assert parser.error is not None and parser.error.code == 1007


def test_a_text_frame_split_across_reads_and_fragments_comes_out_whole() -> None:
    text = "é" * 200 + "😀" * 50
    payload = text.encode()
    data = ws_frame(0x1, payload[:301], fin=False) + ws_frame(0x0, payload[301:])
    for step in (1, 2, 3, 5, 7, 64, 127):
        parser = FrameParser(LIMIT)
        events = [e for i in range(0, len(data), step) for e in parser.feed(data[i : i + step])]
        assert events == [(TEXT, text)] and parser.error is None and parser.buffered == 0


def test_a_whole_text_frame_is_decoded_once_without_an_incremental_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoder() -> codecs.IncrementalDecoder:
        raise AssertionError("the single-frame fast path built an incremental decoder")

    monkeypatch.setattr(frames, "_Utf8Decoder", no_decoder)
    parser = FrameParser(LIMIT)
    assert parser.feed(ws_frame(0x1, KOSME) + ws_frame(0x1, b"\xff")) == [(TEXT, "κόσμε")]
    assert parser.error is not None and parser.error.code == 1007


@st.composite
def split_text(draw: st.DrawFn) -> tuple[bytes, list[int], list[int]]:
    """A payload (often UTF-8, sometimes broken), where its frames end, where its reads end."""
    payload = draw(st.text(max_size=60)).encode()
    if payload and draw(st.booleans()):
        i = draw(st.integers(0, len(payload) - 1))
        payload = payload[:i] + bytes([draw(st.sampled_from([0x80, 0xC0, 0xED, 0xF4, 0xF8, 0xFF]))]) + payload[i + 1 :]
    frame_ends = sorted(set(draw(st.lists(st.integers(0, len(payload)), max_size=4))))
    reads = draw(st.lists(st.integers(1, 9), min_size=1, max_size=8))
    return payload, frame_ends, reads


@given(split_text())
def test_any_split_refuses_at_the_first_invalid_byte_and_otherwise_decodes_the_same(
    case: tuple[bytes, list[int], list[int]],
) -> None:
    payload, frame_ends, reads = case
    bounds = [0, *[e for e in frame_ends if 0 < e < len(payload)], len(payload)]
    wire = b""
    offsets: list[int] = []  # wire offset of each payload byte
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        frame = ws_frame(0x1 if k == 0 else 0x0, payload[a:b], fin=b == len(payload))
        head = len(frame) - (b - a)
        offsets += range(len(wire) + head, len(wire) + len(frame))
        wire += frame
    invalid = first_invalid_prefix(payload)
    parser = FrameParser(LIMIT)
    events: list[tuple[int, str | bytes]] = []
    fed, i = 0, 0
    while fed < len(wire) and parser.error is None:
        step = reads[i % len(reads)]
        i += 1
        events += parser.feed(wire[fed : fed + step])
        fed = min(len(wire), fed + step)
        if invalid is not None and fed > offsets[invalid - 1]:
            assert parser.error is not None, "fed the byte that makes it invalid, and no error"
    if invalid is None:
        assert events == [(TEXT, payload.decode())] and parser.error is None
    else:
        assert events == [] and parser.error is not None and parser.error.code == 1007
