"""Raw WebSocket I/O for tests that must control every byte (hand-made handshakes and frames)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from typing import Any

from tests.conftest import TIMEOUT, make_token


def ws_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0, length: int | None = None
) -> bytes:
    """One RFC 6455 frame as a client sends it (masked unless told otherwise)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


#: Each violation and the close code RFC 6455 asks for: 1007 for bad UTF-8, 1002 for the rest.
PROTOCOL_VIOLATIONS: dict[str, tuple[bytes, int]] = {
    "text-frame-invalid-utf8": (ws_frame(0x1, b"\xff\xfe\xfd"), 1007),
    "text-frame-truncated-utf8": (ws_frame(0x1, '"é'.encode()[:-1]), 1007),
    "rsv1-compressed-without-negotiation": (ws_frame(0x1, b'{"type":"ping"}', rsv=4), 1002),
    "rsv2-set": (ws_frame(0x1, b'{"type":"ping"}', rsv=2), 1002),
    "rsv3-set": (ws_frame(0x1, b'{"type":"ping"}', rsv=1), 1002),
    "reserved-data-opcode-3": (ws_frame(0x3, b"x"), 1002),
    "reserved-control-opcode-11": (ws_frame(0xB, b""), 1002),
    "continuation-without-start": (ws_frame(0x0, b"x"), 1002),
    "new-message-inside-fragmented-one": (ws_frame(0x1, b'{"ty', fin=False) + ws_frame(0x1, b"x"), 1002),
    "fragmented-ping": (ws_frame(0x9, b"x", fin=False), 1002),
    "ping-payload-over-125": (ws_frame(0x9, b"p" * 126), 1002),
    "close-with-invalid-utf8-reason": (ws_frame(0x8, b"\x03\xe8\xff\xfe"), 1007),
    "close-with-invalid-code": (ws_frame(0x8, b"\x03\xed"), 1002),
    "close-with-1-byte-payload": (ws_frame(0x8, b"\x03"), 1002),
    "length-2**63-header": (ws_frame(0x1, b"", length=2**63)[:10], 1002),
    "unmasked-frame": (ws_frame(0x1, b'{"type":"ping"}', mask=False), 1002),
}


def text_frame(obj: Any) -> bytes:
    return ws_frame(0x1, json.dumps(obj).encode())


async def raw_connect(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection; ``rcvbuf`` shrinks our receive buffer so a non-reader backs up fast."""
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def upgrade_request(port: int, path: str, version: str = "13", extra: str = "") -> bytes:
    """A WebSocket upgrade request head, whole; ``extra`` is more header lines (each ending CRLF)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def upgrade_with_frames_behind(port: int) -> bytes:
    """An upgrade request with a ping and a message right behind it, to send in one write."""
    request = upgrade_request(port, f"/ws/room?token={make_token('alice')}")
    return request + text_frame({"type": "ping"}) + text_frame({"type": "message", "data": 1})


async def expect_answers_behind_the_101(reader: asyncio.StreamReader) -> None:
    """What :func:`upgrade_with_frames_behind` must get: the 101, the welcome, the pong, the message."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
    frames = [json.loads((await read_frame(reader))[1]) for _ in range(3)]
    assert [f["type"] for f in frames] == ["welcome", "pong", "message"]
    assert frames[2]["seq"] == 1


async def raw_upgrade(
    port: int, session: str, token: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    """A hand-made WebSocket handshake; returns the streams and the welcome frame."""
    reader, writer = await raw_connect(port, rcvbuf)
    writer.write(upgrade_request(port, f"/ws/{session}?token={token}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode, payload = await read_frame(reader)
    assert opcode == 0x1
    return reader, writer, json.loads(payload)


async def read_frame(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """One server frame (servers never mask): (opcode, payload)."""

    async def read() -> tuple[int, bytes]:
        first, second = await reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        return first & 0x0F, await reader.readexactly(n)

    return await asyncio.wait_for(read(), timeout)


async def cut_how(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> str:
    """Read until the server ends the connection: ``close <code>`` (a close frame) or ``eof`` (dropped)."""
    try:
        while True:
            opcode, payload = await read_frame(reader, timeout)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return f"close {code}"
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return "eof"


async def http_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends before it closes (b"" when it closes without a word)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
    return b"".join(chunks)


def close_writers(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
