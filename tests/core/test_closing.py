"""The close handshake's state machine on its own: events in, frames and decisions out, no socket."""

from __future__ import annotations

import struct

import pytest

from tornado_ws.core import frames
from tornado_ws.core.closing import CLOSED, CLOSING, DONE, OPEN, CloseHandshake
from tornado_ws.core.frames import ProtocolError


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def test_peer_closes_first_its_code_is_echoed_and_the_socket_closes_at_once() -> None:
    hs = CloseHandshake()
    assert hs.receive_close(close_payload(1001, b"away")) == frames.close_frame(1001)
    assert (hs.state, hs.close_code, hs.server_close_code) == (DONE, 1001, None)
    assert not hs.half_close and hs.discards_input and not hs.accepts_data
    assert hs.lost() is False  # the application was told at DONE, not again
    assert hs.state == CLOSED


def test_a_close_without_a_code_gets_an_empty_close_back() -> None:
    hs = CloseHandshake()
    assert hs.receive_close(b"") == frames.encode(frames.CLOSE, b"")
    assert (hs.state, hs.close_code) == (DONE, None)


def test_we_close_first_then_wait_for_the_peer_then_close() -> None:
    hs = CloseHandshake()
    assert hs.close(4000, "bye") == frames.close_frame(4000, "bye")
    assert (hs.state, hs.server_close_code) == (CLOSING, 4000)
    assert not hs.accepts_data and not hs.discards_input  # frames still parsed: the peer's close is awaited
    assert hs.receive_close(close_payload(4000)) is None  # no second close frame
    assert (hs.state, hs.close_code) == (DONE, 4000)
    assert not hs.half_close


def test_data_after_our_close_is_not_accepted() -> None:
    hs = CloseHandshake()
    assert hs.accepts_data
    hs.close()
    assert not hs.accepts_data


def test_a_second_close_is_a_no_op() -> None:
    hs = CloseHandshake()
    assert hs.close(1000) is not None
    assert hs.close(1011, "again") is None
    assert (hs.state, hs.server_close_code) == (CLOSING, 1000)


def test_a_protocol_error_sends_its_code_then_half_closes() -> None:
    hs = CloseHandshake()
    error = ProtocolError(1002, "reserved bits set")
    hs.protocol_error(error)
    assert hs.state == OPEN and hs.accepts_data  # the messages parsed before it are still handled
    assert hs.fail() == frames.close_frame(1002, "reserved bits set")
    assert (hs.state, hs.server_close_code) == (DONE, 1002)
    assert hs.half_close and hs.discards_input


def test_a_protocol_error_after_our_close_sends_nothing_more() -> None:
    hs = CloseHandshake()
    hs.close(1000)
    hs.protocol_error(ProtocolError(1002, "unknown opcode"))
    assert hs.fail() is None
    assert (hs.state, hs.server_close_code) == (DONE, 1000)
    assert hs.half_close


def test_a_close_frame_before_a_protocol_error_ends_it_and_still_half_closes() -> None:
    # Close and garbage in one read: the peer is still sending, so the socket half-closes.
    hs = CloseHandshake()
    hs.protocol_error(ProtocolError(1002, "unknown opcode"))
    assert hs.receive_close(close_payload(1000)) == frames.close_frame(1000)
    assert hs.fail() is None and hs.state == DONE
    assert hs.half_close


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b"\x03", 1002), (close_payload(999), 1002), (close_payload(1005), 1002), (close_payload(1000, b"\xff"), 1007)],
)
def test_an_invalid_close_frame_is_answered_with_the_error_code(payload: bytes, code: int) -> None:
    hs = CloseHandshake()
    reply = hs.receive_close(payload)
    assert reply is not None and reply[2:4] == struct.pack("!H", code)
    assert (hs.state, hs.server_close_code, hs.close_code) == (DONE, code, None)
    assert not hs.half_close  # the peer's close frame arrived: it is done sending


def test_the_socket_lost_before_the_end_tells_the_application_once() -> None:
    for start in (OPEN, CLOSING):
        hs = CloseHandshake()
        if start == CLOSING:
            hs.close()
        assert hs.lost() is True
        assert hs.state == CLOSED and not hs.accepts_data and not hs.discards_input
        assert hs.close() is None and hs.receive_close(b"") is None
