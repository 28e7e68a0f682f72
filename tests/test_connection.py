"""WebSocketConnection on a real socket pair: holding, closing, back-pressure, end of stream."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import TIMEOUT
from tests.rawws import ws_frame
from tornado_ws import connection as connection_module
from tornado_ws.connection import WebSocketConnection


class Recorder(WebSocketConnection):
    """Records what the connection reports; ``holds`` are returned from on_message in turn."""

    def __init__(self, sock: socket.socket, head: bytes = b"") -> None:
        super().__init__(sock, max_message_size=1000, max_outbound_buffer=4096, head=head)
        self.messages: list[str | bytes] = []
        self.pongs: list[bytes] = []
        self.holds: list[asyncio.Future[None]] = []
        self.slow = 0
        self.closed = asyncio.Event()
        self.closed_calls = 0
        self.got_message = asyncio.Event()

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        self.messages.append(message)
        self.got_message.set()
        return self.holds.pop(0) if self.holds else None

    def on_pong(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def on_slow(self) -> None:
        self.slow += 1

    def on_closed(self) -> None:
        self.closed_calls += 1
        self.closed.set()


class Peer:
    """The client end: raw bytes over a non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self, n: int) -> None:
        while len(self.buffer) < n:
            chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), TIMEOUT)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    async def frame(self) -> tuple[int, bytes]:
        await self._fill(2)
        n = self.buffer[1] & 0x7F
        head = 2
        if n == 126:
            await self._fill(4)
            (n,) = struct.unpack("!H", self.buffer[2:4])
            head = 4
        await self._fill(head + n)
        opcode, payload = self.buffer[0] & 0x0F, self.buffer[head : head + n]
        self.buffer = self.buffer[head + n :]
        return opcode, payload

    async def eof(self) -> bool:
        try:
            await self._fill(len(self.buffer) + 1)
        except (EOFError, ConnectionResetError):
            return True
        return False


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, b
    b.close()


@pytest.fixture
def conns() -> Iterator[list[WebSocketConnection]]:
    """Connections to abort after the test: a closed socket left in the selector would haunt the next one."""
    made: list[WebSocketConnection] = []
    yield made
    for conn in made:
        conn.abort()


async def test_a_held_message_holds_the_frames_behind_it(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    conn.holds.append(hold)
    conn.start()
    await peer.send(ws_frame(0x1, b"one") + ws_frame(0x1, b"two") + ws_frame(0x9, b"p") + ws_frame(0x1, b"three"))
    await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    for _ in range(5):
        await asyncio.sleep(0)  # give a wrongly unheld connection every chance to go on
    assert conn.messages == ["one"]
    hold.set_result(None)
    assert await peer.frame() == (0xA, b"p")  # the ping behind the held message is answered after it
    assert conn.messages == ["one", "two", "three"]


async def test_a_failed_held_message_closes_1011(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    conn.holds.append(hold)
    conn.start()
    await peer.send(ws_frame(0x1, b"one") + ws_frame(0x1, b"two"))
    await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    hold.set_exception(RuntimeError("boom"))
    opcode, payload = await peer.frame()
    assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1011))
    assert conn.messages == ["one"]  # nothing after the failure is processed


async def test_server_close_waits_for_the_peer_then_hangs_up(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    conn.start()
    conn.close(4000, "bye")
    assert await peer.frame() == (0x8, struct.pack("!H", 4000) + b"bye")
    conn.write(b"\x81\x01x")  # dropped: nothing follows a close frame
    assert not conn.closed.is_set() and conn.closing
    await peer.send(ws_frame(0x8, struct.pack("!H", 4000)))
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert await peer.eof()
    assert (conn.server_close_code, conn.close_code, conn.closed_calls) == (4000, 4000, 1)


async def test_peer_close_is_echoed_then_the_server_hangs_up(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    conn.start()
    await peer.send(ws_frame(0x8, struct.pack("!H", 1001) + b"away"))
    assert await peer.frame() == (0x8, struct.pack("!H", 1001))
    assert await peer.eof()
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert (conn.server_close_code, conn.close_code) == (None, 1001)


async def test_a_peer_that_never_answers_the_close_is_dropped(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "CLOSE_TIMEOUT", 0.1)
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    conn.start()
    conn.close(1001, "")
    assert (await peer.frame())[0] == 0x8
    assert await peer.eof()
    assert conn.closed_calls == 1 and conn.close_code is None


async def test_end_of_stream_without_a_close_frame(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    conn.start()
    pair[1].close()
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert (conn.close_code, conn.server_close_code, conn.closed_calls) == (None, None, 1)
    conn.abort()  # closing twice is harmless
    assert conn.closed_calls == 1


async def test_a_protocol_error_closes_at_once_and_half_closes(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    peer = Peer(pair[1])
    conn.start()
    await peer.send(ws_frame(0x1, b"fine") + ws_frame(0x1, b"x", rsv=2) + ws_frame(0x1, b"ignored"))
    assert await peer.frame() == (0x8, struct.pack("!H", 1002) + b"reserved bits set")
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)  # the application hears at once...
    assert await peer.eof()  # ...and the peer sees our FIN after the close frame, not a reset
    assert conn.messages == ["fine"]
    await peer.send(b"more garbage")  # discarded until the peer hangs up too
    pair[1].shutdown(socket.SHUT_WR)
    assert conn.closed_calls == 1


async def test_unread_bytes_from_the_handshake_are_processed_first(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Recorder(pair[0])
    conns.append(conn)
    conn._unread = ws_frame(0x1, b"early")
    conn.start()
    await Peer(pair[1]).send(ws_frame(0x1, b"late"))
    while len(conn.messages) < 2:
        conn.got_message.clear()
        await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    assert conn.messages == ["early", "late"]


async def test_backlog_is_kept_in_order_reported_slow_and_drained(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = Recorder(a)
    conns.append(conn)
    peer = Peer(b)
    conn.start()
    frames = [b"\x82\x7e" + struct.pack("!H", 1000) + bytes([i]) * 1000 for i in range(200)]
    for frame in frames:
        conn.write(frame)
    assert conn.pending_bytes == 200 * 1004 and conn.slow == 0  # held for the loop's next pass
    await asyncio.sleep(0)  # that pass: one send(), the rest queued
    assert 4096 < conn.pending_bytes < 200 * 1004 and conn.slow > 0  # over max_outbound_buffer: reported
    await peer.send(ws_frame(0x9, b"1") + ws_frame(0x9, b"2") + ws_frame(0x9, b"3"))
    received = [await peer.frame() for _ in frames]
    assert received == [(0x2, bytes([i]) * 1000) for i in range(200)]
    # Pings that arrived while backed up get one pong, for the latest.
    assert await peer.frame() == (0xA, b"3")
    assert conn.pending_bytes == 0


async def test_the_head_and_early_frames_wait_for_start_then_leave_together(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    a, b = pair
    head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    conn = Recorder(a, head=head)
    conns.append(conn)
    conn.write(b"\x81\x05hello")
    conn.write(b"\x81\x00" * 2500)  # over max_outbound_buffer, but held back on purpose: not slow
    with pytest.raises(BlockingIOError):
        b.recv(100)  # nothing leaves before start()
    assert conn.pending_bytes == len(head) + 7 + 5000 and conn.slow == 0
    conn.start()
    peer = Peer(b)
    await peer._fill(len(head) + 7 + 5000)
    assert peer.buffer == head + b"\x81\x05hello" + b"\x81\x00" * 2500
    assert conn.slow == 0


class Echo(Recorder):
    """Writes every message back to itself and to ``others``, counting socket writes."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.others: list[Echo] = []
        self.sends = 0

    def on_message(self, message: str | bytes) -> None:
        super().on_message(message)
        assert isinstance(message, str)
        wire = b"\x81" + bytes([len(message)]) + message.encode()
        for conn in (self, *self.others):
            conn.write(wire)

    def _send(self, wire: bytes) -> None:
        self.sends += 1
        super()._send(wire)


async def test_messages_of_one_read_reach_each_recipient_in_one_write_in_order(
    conns: list[WebSocketConnection],
) -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        publisher, *watchers = [Echo(a) for a, _ in pairs]
        publisher.others = watchers
        conns.extend([publisher, *watchers])
        for conn in conns:
            conn.start()
        peers = [Peer(b) for _, b in pairs]
        for _, b in pairs:
            b.setblocking(False)
        await peers[0].send(b"".join(ws_frame(0x1, f"m{i}".encode()) for i in range(5)))
        for peer in peers:
            assert [await peer.frame() for _ in range(5)] == [(0x1, f"m{i}".encode()) for i in range(5)]
        assert [conn.sends for conn in (publisher, *watchers)] == [1, 1, 1]  # not 5 each
        # Alone in its read, a message goes out at once, as before.
        await peers[0].send(ws_frame(0x1, b"solo"))
        assert await peers[1].frame() == (0x1, b"solo")
        assert watchers[0].sends == 2
    finally:
        for _, b in pairs:
            b.close()


async def test_a_close_in_the_same_read_goes_out_after_the_held_frames(
    pair: tuple[socket.socket, socket.socket], conns: list[WebSocketConnection]
) -> None:
    conn = Echo(pair[0])
    conns.append(conn)
    conn.start()
    peer = Peer(pair[1])
    await peer.send(ws_frame(0x1, b"a") + ws_frame(0x1, b"b") + ws_frame(0x8, struct.pack("!H", 1000)))
    assert [await peer.frame() for _ in range(3)] == [(0x1, b"a"), (0x1, b"b"), (0x8, struct.pack("!H", 1000))]
    assert await peer.eof()
