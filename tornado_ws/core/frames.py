"""RFC 6455 framing for the server side of a WebSocket. No I/O.

:class:`FrameParser` turns the bytes a client sends into whole messages and
control frames, enforcing what a server must (client frames masked, no
reserved bits, control frames short and unfragmented, valid UTF-8 in text,
valid close codes) and the message size limit. Invalid UTF-8 is refused as soon as
the bytes so far cannot start a valid text, not when the message completes
(Autobahn 6.4.*): a text message in several frames, or a text frame arriving in
several reads, is decoded incrementally as it comes. A violation raises
:class:`ProtocolError` carrying the close code to fail the connection with.
:func:`encode` builds unmasked server frames.

Like the sans-I/O core of the ``websockets`` library: bytes in, events out,
so every rule here is unit-tested without a socket.
"""

from __future__ import annotations

import codecs
import struct

from tornado_ws.errors import CloseCode

_PROTOCOL = CloseCode.PROTOCOL_ERROR

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (TEXT, BINARY)
_CONTROL = (CLOSE, PING, PONG)
_NO_MASK = b"\x00\x00\x00\x00"
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: Close codes a peer may send (RFC 6455 section 7.4, the IANA registry, and the private range).
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class ProtocolError(Exception):
    """The peer broke the protocol; fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def encode(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame; ``None`` sends no code (the reply to a close that had none)."""
    if code is None:
        return encode(CLOSE, b"")
    # A control payload is at most 125 bytes: 2 for the code, 123 for the reason.
    data = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return encode(CLOSE, struct.pack("!H", code) + data)


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a received close frame (``None``: it had no code)."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise ProtocolError(_PROTOCOL, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise ProtocolError(_PROTOCOL, "invalid close code")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


def python_unmask(mask: bytes, data: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask``; the fallback when Tornado has no C extension."""
    if mask == _NO_MASK or not data:
        return data
    n = len(data)
    # XOR as one big integer: no per-byte Python, but still ~4 µs per KiB.
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


try:
    # Tornado's C unmasking is ~25x faster at 64 KiB (docs/performance.md), and unmasking is CPU
    # an unauthenticated peer makes us spend.
    from tornado.speedups import websocket_mask as unmask
except ImportError:  # Tornado built without its extension
    unmask = python_unmask


class FrameParser:
    """Incremental parser of client frames.

    :meth:`feed` returns the complete events in the bytes so far, in order:
    ``(TEXT, str)``, ``(BINARY, bytes)``, ``(PING, bytes)``, ``(PONG, bytes)``
    and ``(CLOSE, bytes)`` (decode the last with :func:`parse_close`).
    Fragmented messages come out whole. A violation stops parsing: the events
    before it are still returned, and :attr:`error` says how to fail the
    connection; the parser must not be fed again.
    """

    __slots__ = (
        "_buffer",
        "_checked",
        "_decoder",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "_partial",
        "_text",
        "_wanted",
        "error",
        "max_message_size",
    )

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        # A partial frame grows here in place; re-joining it with each read would be quadratic.
        # None while nothing is partial: an idle connection holds no buffer (docs/performance.md).
        self._buffer: bytearray | None = None
        #: How many buffered bytes the partial frame needs before parsing it again is worth it.
        self._wanted = 0
        #: The opcode of the fragmented message in progress (0: none), its payload so far, as bytes
        #: (binary) or as text decoded fragment by fragment, and its size.
        self._fragment_opcode = 0
        self._fragments: list[bytes] | None = None
        self._text: list[str] | None = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._fragment_size = 0
        #: A text frame not whole yet: its payload's offset in the buffer and its mask; and how
        #: many of its payload bytes are decoded already.
        self._partial: tuple[int, bytes] | None = None
        self._checked = 0
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame or message."""
        return (len(self._buffer) if self._buffer is not None else 0) + self._fragment_size

    def feed(self, data: bytes) -> list[tuple[int, str | bytes]]:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._wanted:
                partial = self._partial
                if partial is not None:  # a text frame: its new bytes are decoded now
                    try:
                        self._check_partial(buffer, partial[0], partial[1], len(buffer))
                    except ProtocolError as exc:
                        self.error = exc
                return []  # still partial: O(len(data)) per read, whatever the frame's size
            # Copied once per completed frame (plus what followed it in this read).
            data = bytes(buffer)
            self._buffer = None
        events: list[tuple[int, str | bytes]] = []
        try:
            pos = self._parse(data, events)
        except ProtocolError as exc:
            self.error = exc
            return events
        if pos < len(data):
            self._buffer = bytearray(memoryview(data)[pos:])
        return events

    def _parse(self, data: bytes, events: list[tuple[int, str | bytes]]) -> int:
        """Append the complete events in ``data`` to ``events``; return the offset parsed up to."""
        n = len(data)
        pos = 0
        self._wanted = 2
        self._partial = None
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b0 & 0x70:
                raise ProtocolError(_PROTOCOL, "reserved bits set")
            if not b1 & 0x80:
                raise ProtocolError(_PROTOCOL, "client frames must be masked")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            start = pos + 6
            if length == 126:
                if n - pos < 4:
                    self._wanted = 4
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 8
            elif length == 127:
                if n - pos < 10:
                    self._wanted = 10
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise ProtocolError(_PROTOCOL, "64-bit length with its top bit set")
                start = pos + 14
            if opcode >= 8:
                if opcode not in _CONTROL:
                    raise ProtocolError(_PROTOCOL, "unknown opcode")
                if length > 125 or not fin:
                    raise ProtocolError(_PROTOCOL, "control frames must be short and unfragmented")
            elif opcode == CONTINUATION:
                if not self._fragment_opcode:
                    raise ProtocolError(_PROTOCOL, "continuation frame without a message")
            elif opcode not in _DATA:
                raise ProtocolError(_PROTOCOL, "unknown opcode")
            elif self._fragment_opcode:
                raise ProtocolError(_PROTOCOL, "new message inside a fragmented one")
            if opcode < 8 and length + self._fragment_size > self.max_message_size:
                # Refused from the header alone: the payload is never buffered.
                raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message too big")
            end = start + length
            if end > n:
                self._wanted = end - pos
                if opcode == TEXT or (opcode == CONTINUATION and self._fragment_opcode == TEXT):
                    if n < start:
                        self._wanted = start - pos  # come back with the mask, to decode as it arrives
                    else:
                        mask = data[start - 4 : start]
                        self._check_partial(data, start, mask, n)
                        self._partial = (start - pos, mask)
                break
            checked = self._checked
            if checked:  # the frame that was partial: the start of its payload is decoded already
                self._checked = 0
                payload = unmask(_rotated(data[start - 4 : start], checked), data[start + checked : end])
            else:
                payload = unmask(data[start - 4 : start], data[start:end])
            pos = end
            if opcode >= 8:
                events.append((opcode, payload))
            elif fin and opcode and not checked:
                events.append(_message(opcode, payload))  # the common case: decoded once, here
            else:
                self._fragment(opcode, payload, fin, length, events)
        return pos

    def _check_partial(self, data: bytes | bytearray, start: int, mask: bytes, end: int) -> None:
        """Decode the bytes up to ``end`` of the text frame whose payload begins at ``start``."""
        checked = self._checked
        if end > start + checked:
            chunk = bytes(memoryview(data)[start + checked : end])
            self._decode(unmask(_rotated(mask, checked), chunk), False)
            self._checked = end - start

    def _decode(self, payload: bytes, final: bool) -> None:
        decoder = self._decoder
        if decoder is None:
            self._decoder = decoder = _Utf8Decoder()
        try:
            text = decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None
        if text:
            if self._text is None:
                self._text = [text]
            else:
                self._text.append(text)

    def _fragment(
        self, opcode: int, payload: bytes, fin: int, length: int, events: list[tuple[int, str | bytes]]
    ) -> None:
        """A frame of a message in several frames (or of a text frame decoded as it arrived)."""
        if opcode:
            self._fragment_opcode = opcode
        self._fragment_size += length
        if self._fragment_opcode == TEXT:
            self._decode(payload, bool(fin))
        elif self._fragments is None:
            self._fragments = [payload]
        else:
            self._fragments.append(payload)
        if fin:
            if self._fragment_opcode == TEXT:
                events.append((TEXT, "".join(self._text or ())))
                self._text = None
                self._decoder = None
            else:
                events.append((BINARY, b"".join(self._fragments or ())))
                self._fragments = None
            self._fragment_opcode = 0
            self._fragment_size = 0


def _rotated(mask: bytes, offset: int) -> bytes:
    """The mask for a payload's bytes from ``offset`` on."""
    k = offset & 3
    return mask[k:] + mask[:k] if k else mask


def _message(opcode: int, payload: bytes) -> tuple[int, str | bytes]:
    if opcode == BINARY:
        return BINARY, payload
    try:
        return TEXT, payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None
