"""Client frame parsing and server frame building, without sockets."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_ws.core.protocol import (
    MessageError,
    Ping,
    Publish,
    encode_data,
    message_id_of,
    parse_client_message,
    valid_session_id,
)
from tornado_ws.core.server_messages import OutFrame, error_frame, message_frame
from tornado_ws.errors import ErrorCode


def test_message_and_ping_parse() -> None:
    assert parse_client_message('{"type":"message","data":{"a":[1,2]}}') == Publish('{"a":[1,2]}')
    assert parse_client_message('{"type":"ping"}') == Ping()
    assert parse_client_message('{"type":"message","data":null}') == Publish("null")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{", ErrorCode.BAD_JSON),
        ('{"type":"message","data":NaN}', ErrorCode.BAD_JSON),
        ('{"type":"message","data":-Infinity}', ErrorCode.BAD_JSON),
        ('{"type":"message","data":1,"data":2}', ErrorCode.BAD_JSON),
        ('{"type":"message","data":' + "1" * 4301 + "}", ErrorCode.BAD_JSON),
        ("[" * 100_000, ErrorCode.BAD_JSON),
        ('{"type":"message","data":"\\udc00"}', ErrorCode.BAD_JSON),
        ("[]", ErrorCode.BAD_FRAME),
        ('{"type":null}', ErrorCode.BAD_FRAME),
        ('{"type":"message"}', ErrorCode.BAD_FRAME),
        ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        (b"{}", ErrorCode.BINARY_NOT_SUPPORTED),
    ],
)
def test_bad_frames_raise_frame_error(raw: str | bytes, code: ErrorCode) -> None:
    with pytest.raises(MessageError) as info:
        parse_client_message(raw)
    assert info.value.code == code
    assert info.value.message


def test_deep_but_parseable_data_that_cannot_be_reencoded_is_refused() -> None:
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(MessageError):
        encode_data(deep)
    with pytest.raises(MessageError):
        encode_data({1j})


def test_error_message_never_echoes_the_input() -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
    with pytest.raises(MessageError) as info:
        parse_client_message('{"type":"' + secret + '"}')
    assert secret not in info.value.message


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parser_never_raises_anything_but_frame_error(raw: str | bytes) -> None:
    try:
        frame = parse_client_message(raw)
    except MessageError as exc:
        assert 0 < len(exc.message) <= 200  # fixed text for the error frame
    else:
        assert isinstance(frame, (Publish, Ping))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_data_round_trips_through_a_message_frame(data: object) -> None:
    try:
        raw = json.dumps({"type": "message", "data": data})
    except ValueError:  # pragma: no cover - hypothesis text can hold lone surrogates json.dumps still accepts
        return
    try:
        frame = parse_client_message(raw)
    except MessageError:
        return  # lone surrogates: refused, never forwarded
    assert isinstance(frame, Publish)
    out = message_frame(session_id="s", user_id="u", name="N", seq=3, ts=1.5, data_json=frame.data_json)
    decoded = json.loads(out.text)
    expected = {"type": "message", "session_id": "s", "user_id": "u", "name": "N", "seq": 3, "ts": 1.5}
    assert decoded == {**expected, "data": data}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_wire_bytes_are_a_valid_unmasked_text_frame(size: int) -> None:
    frame = OutFrame("x" * size)
    wire = frame.wire
    assert wire[0] == 0x81  # FIN + text opcode
    length = wire[1]
    assert length & 0x80 == 0  # unmasked
    if length == 126:
        (length,) = struct.unpack("!H", wire[2:4])
        payload = wire[4:]
    elif length == 127:
        (length,) = struct.unpack("!Q", wire[2:10])
        payload = wire[10:]
    else:
        payload = wire[2:]
    assert length == size == len(payload)
    assert frame.wire is wire  # framed once, reused
    assert "OutFrame" in repr(frame)


@pytest.mark.parametrize(
    ("session_id", "ok"),
    [
        ("a", True),
        ("A-z_0.9~:", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("é", False),
        ("a\x00", False),
        ("\u0430", False),
    ],  # Cyrillic a,
)
def test_session_id_rule(session_id: str, ok: bool) -> None:
    assert valid_session_id(session_id) is ok


# -- message ids ---------------------------------------------------------------------------


def test_a_message_id_is_parsed_and_rides_in_the_frame_before_data() -> None:
    frame = parse_client_message('{"type":"message","id":"m-1.a:B_9","data":{"x":1}}')
    assert frame == Publish('{"x":1}', "m-1.a:B_9")
    assert parse_client_message('{"type":"message","data":1}') == Publish("1", None)
    text = message_frame(
        session_id="s", user_id="u", name=None, seq=3, ts=1.5, data_json='{"x":1}', message_id="m-1"
    ).text
    assert text == '{"type":"message","session_id":"s","user_id":"u","seq":3,"ts":1.5,"id":"m-1","data":{"x":1}}'
    assert '"id"' not in message_frame(session_id="s", user_id="u", name=None, seq=3, ts=1.5, data_json="1").text


@pytest.mark.parametrize("bad", ['""', '"' + "x" * 65 + '"', '"a b"', '"é"', '"a/b"', "5", "null", '["a"]', "true"])
def test_a_bad_message_id_is_bad_frame_without_the_id(bad: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_client_message(f'{{"type":"message","id":{bad},"data":1}}')
    assert (caught.value.code, caught.value.message_id) == (ErrorCode.BAD_FRAME, None)


def test_errors_about_a_message_with_a_valid_id_carry_it() -> None:
    with pytest.raises(MessageError) as no_data:
        parse_client_message('{"type":"message","id":"m1"}')
    assert (no_data.value.code, no_data.value.message_id) == (ErrorCode.BAD_FRAME, "m1")
    with pytest.raises(MessageError) as surrogate:
        parse_client_message('{"type":"message","id":"m2","data":"\\ud83d"}')
    assert (surrogate.value.code, surrogate.value.message_id) == (ErrorCode.BAD_JSON, "m2")
    assert json.loads(error_frame("rate_limited", "x", "m3").text) == {
        "type": "error",
        "code": "rate_limited",
        "message": "x",
        "id": "m3",
    }


def test_message_id_of_reads_only_a_message_frames_valid_id() -> None:
    assert message_id_of('{"type":"message","id":"m1","data":1}') == "m1"
    for raw in (
        '{"type":"message","data":"id"}',
        '{"type":"ping","id":"m1"}',
        '{"type":"message","id":"a b"}',
        '{"id": not json',
        b'{"type":"message","id":"m1"}',
        '{"type":"message","data":{"id":"m1"}}',
    ):
        assert message_id_of(raw) is None, raw
