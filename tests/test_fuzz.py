"""Fuzzing the client-frame parser and the handler behind it.

1. ``parse_client_message`` against documents built with a *known answer*: hypothesis builds a frame
   structure, optionally poisons it (NaN, duplicate keys, 5000-digit integers, 5000-deep nesting,
   lone surrogates, overflowing floats, truncation, a BOM, raw control characters, trailing data)
   and renders it with random whitespace; the parser must give exactly the expected frame or error
   code, never raise anything else, never echo the input in an error message.
2. The same documents, binary frames and invalid UTF-8 through a real socket to the CLI server:
   every frame gets exactly one answer, a valid JSON frame of the expected type, or the expected
   close code; nothing is ever logged as an error, and the server keeps serving.
3. Random raw WebSocket frames (any opcode, RSV bits, fragmentation, masking, payload): the server
   answers with valid frames or closes; it never hangs and never crashes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.conftest import SECRET, ServerProcess, make_token
from tornado_ws.core.protocol import MessageError, Ping, Publish, Refresh, parse_client_message
from tornado_ws.core.server_messages import error_frame, message_frame
from tornado_ws.errors import ErrorCode

#: Planted in every document; an error message that contains it echoed client input.
MARKER = "zq-MARKER-7f3a"
WHITESPACE = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n ", "  "])

# -- documents with a known answer -------------------------------------------------------------------


class Raw(str):
    """Rendered verbatim: a token JSON's encoder would never produce (NaN, 1e999, huge ints)."""


class Pairs(list):  # type: ignore[type-arg]
    """An object as a list of (key, value) pairs, so a key may repeat."""


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
#: Strings that may hold lone surrogates (valid to decode, impossible to re-encode as UTF-8).
surrogate_text = st.text(st.characters(exclude_categories=()), max_size=12)
values = st.recursive(
    st.sampled_from([False] * 7 + [True]).flatmap(lambda odd: surrogate_text if odd else scalars),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def render(value: Any, ws: list[str], ascii_only: bool) -> str:
    """JSON text of ``value`` with a fresh whitespace choice between tokens."""
    pad = ws[len(value) % len(ws)] if isinstance(value, (list, Pairs, dict)) and ws else ""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        value = Pairs(value.items())
    if isinstance(value, Pairs):
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=ascii_only)}{pad}:{pad}{render(v, ws, ascii_only)}{pad}"
            for k, v in value
        ]
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(f"{pad}{render(v, ws, ascii_only)}{pad}" for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


@dataclasses.dataclass
class Doc:
    text: str
    #: "message", "ping", "refresh" (a parsed frame) or an ErrorCode value.
    expected: str
    data: Any = None


KINDS = [
    "message",
    "message",
    "message",
    "ping",
    "refresh",
    "refresh-bad-token",
    "unknown",
    "type-not-str",
    "no-type",
    "no-data",
    "array",
]
POISONS = [None] * 6 + [
    "nan",
    "dup-top",
    "dup-nested",
    "bigint",
    "deep",
    "truncate",
    "trailing",
    "bom",
    "ctrl",
    "surrogate-in-data",
    "overflow-in-data",
    "overflow-elsewhere",
    "shallow-nesting",
]


@st.composite
def documents(draw: st.DrawFn, ascii_only: bool = False) -> Doc:
    kind = draw(st.sampled_from(KINDS))
    data = draw(values)
    pairs = Pairs()
    expected: str
    if kind == "message":
        pairs += [("type", "message"), ("data", data)]
        expected = "bad_json" if has_lone_surrogate(data) else "message"
    elif kind == "ping":
        pairs.append(("type", "ping"))
        expected = "ping"
    elif kind == "refresh":
        pairs += [("type", "refresh"), ("token", draw(st.text(min_size=1, max_size=40)))]
        expected = "refresh"
    elif kind == "refresh-bad-token":
        pairs += [("type", "refresh"), ("token", draw(st.sampled_from(["", 7, None, ["t"]])))]
        expected = ErrorCode.BAD_FRAME
    elif kind == "unknown":
        known = ("message", "ping", "refresh", "join", "leave")
        kind_name = draw(st.text(max_size=10).filter(lambda t: t not in known))
        pairs += [("type", kind_name), ("data", data)]
        expected = ErrorCode.UNKNOWN_TYPE
    elif kind == "type-not-str":
        pairs += [("type", draw(st.sampled_from([1, None, True, ["message"], {"t": "ping"}]))), ("data", data)]
        expected = ErrorCode.BAD_FRAME
    elif kind == "no-type":
        pairs.append(("data", data))
        expected = ErrorCode.BAD_FRAME
    elif kind == "no-data":
        pairs.append(("type", "message"))
        expected = ErrorCode.BAD_FRAME
    else:
        pairs = [MARKER, data]  # type: ignore[assignment]
        expected = ErrorCode.BAD_FRAME
    if isinstance(pairs, Pairs):
        # Extra fields are ignored: user_id/name spoofing, the marker, anything.
        extras = draw(st.lists(st.tuples(st.sampled_from(["user_id", "name", "seq", "x", "y"]), values), max_size=2))
        seen = {k for k, _ in pairs}
        pairs += [(k, v) for k, v in dict(extras).items() if k not in seen]
        pairs.insert(draw(st.integers(0, len(pairs))), (MARKER, MARKER))

    poison = draw(st.sampled_from(POISONS))
    top: Any = pairs
    if poison in ("nan", "bigint", "overflow-elsewhere"):
        token = {
            "nan": draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])),
            "bigint": draw(st.sampled_from(["-", ""])) + "9" * draw(st.integers(4301, 5000)),
            "overflow-elsewhere": draw(st.sampled_from(["1e999", "-1e999", "2E+400"])),
        }[poison]
        if isinstance(top, Pairs):
            top.append(("poison", Raw(token)))
        else:
            top = [*top, Raw(token)]
        if poison != "overflow-elsewhere":
            expected = ErrorCode.BAD_JSON
    elif poison == "dup-top" and isinstance(top, Pairs) and top:
        top.append(draw(st.sampled_from(top)))
        expected = ErrorCode.BAD_JSON
    elif poison == "dup-nested":
        nested = Pairs([("k", 1), ("k", 1)])
        if isinstance(top, Pairs):
            top.append(("nested", [nested]))
        else:
            top = [*top, nested]
        expected = ErrorCode.BAD_JSON
    elif poison == "deep":
        depth = draw(st.sampled_from([5000, 20_000]))
        top = Raw("[" * depth + render(top, [], ascii_only) + "]" * depth)
        expected = ErrorCode.BAD_JSON
    elif poison == "shallow-nesting" and kind == "message":
        depth = draw(st.integers(1, 100))
        data = Raw("[" * depth + render(data, [], ascii_only) + "]" * depth)
        top = Pairs([(k, data if k == "data" else v) for k, v in top])
        data = json.loads(str(data))
    elif poison in ("surrogate-in-data", "overflow-in-data") and kind == "message":
        bad = Raw('"\\ud800"') if poison == "surrogate-in-data" else Raw("1e999")
        top = Pairs([(k, [v, bad] if k == "data" else v) for k, v in top])
        expected = ErrorCode.BAD_JSON
    text = render(top, draw(st.lists(WHITESPACE, min_size=1, max_size=4)), ascii_only)
    if poison == "truncate" and text.startswith("{"):
        text = text[: draw(st.integers(1, len(text) - 1))]
        expected = ErrorCode.BAD_JSON
    elif poison == "trailing":
        text += draw(st.sampled_from([" x", "{}", " 1", "]", ",", '"'])) if text else "x"
        expected = ErrorCode.BAD_JSON
    elif poison == "bom":
        text = "\ufeff" + text
        expected = ErrorCode.BAD_JSON
    elif poison == "ctrl" and f'"{MARKER}"' in text:
        control = draw(st.sampled_from(["\x00", "\x01", "\x1f", "\n"]))  # raw, unescaped inside a string
        text = text.replace(f'"{MARKER}"', f'"{MARKER}{control}"', 1)
        expected = ErrorCode.BAD_JSON
    return Doc(text, str(expected), data if expected == "message" else None)


# -- 1. the parser ---------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(documents())
def test_parser_gives_the_known_answer_and_never_anything_else(doc: Doc) -> None:
    event(f"expected {doc.expected}")
    try:
        frame = parse_client_message(doc.text)
    except MessageError as exc:
        assert str(exc.code) == doc.expected, (exc.code, exc.message)
        assert 0 < len(exc.message) <= 200 and MARKER not in exc.message
        answer = json.loads(error_frame(exc.code, exc.message).text)  # what the handler sends back
        assert answer == {"type": "error", "code": doc.expected, "message": exc.message}
        return
    kinds = {Publish: "message", Ping: "ping", Refresh: "refresh"}
    assert kinds[type(frame)] == doc.expected, frame
    if isinstance(frame, Publish):
        frame.data_json.encode("utf-8")  # always sendable
        assert json.loads(frame.data_json) == doc.data
        out = message_frame(session_id="s", user_id="u", name=None, seq=1, ts=1.0, data_json=frame.data_json)
        assert json.loads(out.text)["data"] == doc.data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_binary_frames_are_always_binary_not_supported(raw: bytes) -> None:
    with pytest.raises(MessageError) as info:
        parse_client_message(raw)
    assert info.value.code == ErrorCode.BINARY_NOT_SUPPORTED


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_arbitrary_text_never_raises_anything_but_frame_error(raw: str) -> None:
    try:
        parse_client_message(raw)
    except MessageError as exc:
        assert 0 < len(exc.message) <= 200


# -- 2. and 3. through a real socket ------------------------------------------------------------------

MAX_MESSAGE = 65536


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    server = ServerProcess(["--jwt-secret", SECRET, "--max-message-size", str(MAX_MESSAGE)])
    yield server
    server.stop()
    output = server.output()
    server.log_path.unlink(missing_ok=True)
    for bad in ("Traceback", " ERROR "):
        at = output.find(bad)
        assert at < 0, output[max(0, at - 1500) : at + 2500]


_counter = iter(range(10**9))


def frames_to_send() -> st.SearchStrategy[list[tuple[str, Any]]]:
    kinds = {
        "doc": documents(ascii_only=True),
        "binary": st.binary(max_size=64),
        "bad-utf8": st.sampled_from([b"\xff", b"\xc3", b'{"type":"ping","x":"\xed\xa0\x80"}', b"\xf8\x88\x80\x80"]),
        "sized": st.integers(MAX_MESSAGE - 40, MAX_MESSAGE + 10),
    }
    weighted = ["doc"] * 12 + ["binary"] * 2 + ["bad-utf8", "sized"]
    item = st.sampled_from(weighted).flatmap(lambda kind: kinds[kind].map(lambda payload: (kind, payload)))
    return st.lists(item, min_size=1, max_size=10)


async def _one_connection(port: int, frames: list[tuple[str, Any]]) -> None:
    n = next(_counter)
    user, session = f"fuzz-{n}", f"fuzz-{n}"
    url = f"ws://127.0.0.1:{port}/ws/{session}?token={make_token(user, 'fuzz')}"
    async with websockets.connect(url, max_queue=None, max_size=None, open_timeout=5) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        seq = welcome["seq"]
        for what, payload in frames:
            expect_close: int | None = None
            if what == "doc":
                text = payload.text
                size = len(text.encode())
                expected = payload.expected if size <= MAX_MESSAGE else "too-big"
                await ws.send(text)
            elif what == "sized":
                envelope = '{"type":"message","data":""}'
                text = '{"type":"message","data":"' + "s" * (payload - len(envelope)) + '"}'
                expected = "message" if payload <= MAX_MESSAGE else "too-big"
                payload = Doc(text, expected, "s" * (payload - len(envelope)))
                await ws.send(text)
            elif what == "binary":
                expected = ErrorCode.BINARY_NOT_SUPPORTED
                await ws.send(payload)
            else:
                expected = "cut"
                await ws.send(payload, text=True)  # a text frame that is not UTF-8
            event(f"expected {expected}")
            if expected == "too-big":
                expect_close = 1009
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                if expected == "cut":
                    assert code == 1007, code  # invalid UTF-8 in a text frame (RFC 6455 8.1)
                else:
                    assert expect_close is not None and code == expect_close, (expected, code)
                return
            assert isinstance(answer, dict) and expected not in ("cut", "too-big"), (expected, answer)
            if expected == "message":
                seq += 1
                assert answer["type"] == "message"
                assert (answer["user_id"], answer["session_id"], answer["seq"]) == (user, session, seq)
                assert answer["data"] == payload.data
            elif expected == "ping":
                assert answer == {"type": "pong"}
            elif expected == "refresh":
                assert (answer["type"], answer["code"]) == ("error", "bad_refresh")
            else:
                assert (answer["type"], answer["code"]) == ("error", str(expected)), answer
                assert MARKER not in answer["message"]
        # Exactly one answer per frame: nothing else is queued behind them.
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}


def _assert_server_serves(server: ServerProcess) -> None:
    async def check() -> None:
        url = f"ws://127.0.0.1:{server.port}/ws/after-fuzz?token={make_token('after', 'fuzz')}"
        async with websockets.connect(url, open_timeout=5) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send('{"type":"message","data":"alive"}')
            assert json.loads(await ws.recv())["data"] == "alive"

    assert server.proc.poll() is None
    asyncio.run(check())


def test_every_frame_gets_one_valid_answer_or_a_close_code(fuzz_server: ServerProcess) -> None:
    @settings(max_examples=60, deadline=None)
    @given(frames_to_send())
    def run(frames: list[tuple[str, Any]]) -> None:
        asyncio.run(_one_connection(fuzz_server.port, frames))

    run()
    _assert_server_serves(fuzz_server)


# -- raw frames ------------------------------------------------------------------------------------------


@st.composite
def raw_frames(draw: st.DrawFn) -> bytes:
    wild = draw(st.sampled_from([False, False, False, True]))
    payload = draw(
        st.binary(max_size=200)
        | st.sampled_from([b"", b'{"type":"ping"}', b'{"type":"message","data":[1]}', b"\x03\xe8bye", b"\x03"])
    )
    if wild:  # anything at all: reserved opcodes and bits, fragments, unmasked, long control frames
        opcode, fin = draw(st.integers(0, 15)), draw(st.booleans())
        rsv, masked = draw(st.integers(0, 7)), draw(st.booleans())
    else:  # well-formed frames of every legal kind, with any payload
        opcode, fin, rsv, masked = draw(st.sampled_from([0x1, 0x1, 0x2, 0x9, 0xA, 0x8])), True, 0, True
        if opcode >= 0x8:
            payload = payload[:125]
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    head = struct.pack("!B", first)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += struct.pack("!B", mask_bit | n)
    else:
        head += struct.pack("!BH", mask_bit | 126, n)
    if not masked:
        return head + payload
    key = draw(st.binary(min_size=4, max_size=4))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _masked_text(payload: bytes) -> bytes:
    key = os.urandom(4)
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _raw_connection(port: int, frames: list[bytes]) -> str:
    """Send the frames, then a well-formed ping; return how it ended: "in sync" or "closed"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        token = make_token(f"raw-{next(_counter)}", "fuzz")
        writer.write(
            f"GET /ws/raw?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"".join(frames) + _masked_text(b'{"type":"ping"}'))
        while True:
            try:
                first, second = await asyncio.wait_for(reader.readexactly(2), 5)
                n = second & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return "closed"
            opcode = first & 0x0F
            assert second & 0x80 == 0 and first & 0x70 == 0  # servers never mask, never set RSV bits
            assert opcode in (0x1, 0x8, 0x9, 0xA), opcode
            if opcode == 0x8:
                assert len(payload) != 1
                return "closed"
            if opcode == 0x1:
                frame = json.loads(payload)
                assert frame["type"] in ("welcome", "error", "pong", "message", "refreshed"), frame
                if frame["type"] == "error":
                    assert frame["code"] in set(ErrorCode)
                if frame == {"type": "pong"}:
                    return "in sync"
    finally:
        writer.close()


def test_random_raw_frames_never_hang_or_crash_the_server(fuzz_server: ServerProcess) -> None:
    outcomes: dict[str, int] = {}

    @settings(max_examples=80, deadline=None)
    @given(st.lists(raw_frames(), min_size=1, max_size=4))
    def run(frames: list[bytes]) -> None:
        outcome = asyncio.run(_raw_connection(fuzz_server.port, frames))
        event(outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    run()
    assert set(outcomes) <= {"in sync", "closed"}
    _assert_server_serves(fuzz_server)
