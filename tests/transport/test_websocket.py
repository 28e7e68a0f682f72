"""WebSocketConnection on a real socket pair: holding, closing, back-pressure, end of stream."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT
from tests.rawws import ws_frame
from tornado_ws.transport import websocket as connection_module
from tornado_ws.transport.websocket import WebSocketConnection


class Recorder(WebSocketConnection):
    """Records what the connection reports; ``holds`` are returned from on_message in turn."""

    def __init__(self, sock: socket.socket, head: bytes = b"", unread: bytes = b"") -> None:
        super().__init__(sock, max_message_size=1000, max_outbound_buffer=4096, head=head, unread=unread)
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


Connect = Callable[..., tuple[Any, Peer]]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(cls=Recorder, **kwargs)``: a connection on one end of a socket pair, a raw peer on
    the other. Aborted after the test: a closed socket left in the selector would haunt the next one."""
    made: list[tuple[WebSocketConnection, socket.socket]] = []

    def make(cls: type[Recorder] = Recorder, rcvbuf: int | None = None, **kwargs: Any) -> tuple[Any, Peer]:
        a, b = socket.socketpair()
        b.setblocking(False)
        if rcvbuf is not None:  # a small window on both sides: the connection backs up fast
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        conn = cls(a, **kwargs)
        made.append((conn, b))
        return conn, Peer(b)

    yield make
    for conn, b in made:
        conn.abort()
        b.close()


async def test_a_held_message_holds_the_frames_behind_it(connect: Connect) -> None:
    conn, peer = connect()
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


async def test_a_failed_held_message_closes_1011(connect: Connect) -> None:
    conn, peer = connect()
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    conn.holds.append(hold)
    conn.start()
    await peer.send(ws_frame(0x1, b"one") + ws_frame(0x1, b"two"))
    await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    hold.set_exception(RuntimeError("boom"))
    opcode, payload = await peer.frame()
    assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1011))
    assert conn.messages == ["one"]  # nothing after the failure is processed


async def test_server_close_waits_for_the_peer_then_hangs_up(connect: Connect) -> None:
    conn, peer = connect()
    conn.start()
    conn.close(4000, "bye")
    assert await peer.frame() == (0x8, struct.pack("!H", 4000) + b"bye")
    conn.write(b"\x81\x01x")  # dropped: nothing follows a close frame
    assert not conn.closed.is_set() and conn.closing
    await peer.send(ws_frame(0x8, struct.pack("!H", 4000)))
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert await peer.eof()
    assert (conn.server_close_code, conn.close_code, conn.closed_calls) == (4000, 4000, 1)


async def test_peer_close_is_echoed_then_the_server_hangs_up(connect: Connect) -> None:
    conn, peer = connect()
    conn.start()
    await peer.send(ws_frame(0x8, struct.pack("!H", 1001) + b"away"))
    assert await peer.frame() == (0x8, struct.pack("!H", 1001))
    assert await peer.eof()
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert (conn.server_close_code, conn.close_code) == (None, 1001)


async def test_a_peer_that_never_answers_the_close_is_dropped(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "CLOSE_TIMEOUT", 0.1)
    conn, peer = connect()
    conn.start()
    conn.close(1001, "")
    assert (await peer.frame())[0] == 0x8
    assert await peer.eof()
    assert conn.closed_calls == 1 and conn.close_code is None


async def test_end_of_stream_without_a_close_frame(connect: Connect) -> None:
    conn, peer = connect()
    conn.start()
    peer.sock.close()
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)
    assert (conn.close_code, conn.server_close_code, conn.closed_calls) == (None, None, 1)
    conn.abort()  # closing twice is harmless
    assert conn.closed_calls == 1


async def test_a_protocol_error_closes_at_once_and_half_closes(connect: Connect) -> None:
    conn, peer = connect()
    conn.start()
    await peer.send(ws_frame(0x1, b"fine") + ws_frame(0x1, b"x", rsv=2) + ws_frame(0x1, b"ignored"))
    assert await peer.frame() == (0x8, struct.pack("!H", 1002) + b"reserved bits set")
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)  # the application hears at once...
    assert await peer.eof()  # ...and the peer sees our FIN after the close frame, not a reset
    assert conn.messages == ["fine"]
    await peer.send(b"more garbage")  # discarded until the peer hangs up too
    peer.sock.shutdown(socket.SHUT_WR)
    assert conn.closed_calls == 1


async def test_unread_bytes_from_the_handshake_are_processed_first(connect: Connect) -> None:
    conn, peer = connect(unread=ws_frame(0x1, b"early"))
    conn.start()
    await peer.send(ws_frame(0x1, b"late"))
    while len(conn.messages) < 2:
        conn.got_message.clear()
        await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    assert conn.messages == ["early", "late"]


async def test_backlog_is_kept_in_order_reported_slow_and_drained(connect: Connect) -> None:
    conn, peer = connect(rcvbuf=4096)
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


async def test_the_head_and_early_frames_wait_for_start_then_leave_together(connect: Connect) -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    conn, peer = connect(head=head)
    conn.write(b"\x81\x05hello")
    conn.write(b"\x81\x00" * 2500)  # over max_outbound_buffer, but held back on purpose: not slow
    with pytest.raises(BlockingIOError):
        peer.sock.recv(100)  # nothing leaves before start()
    assert conn.pending_bytes == len(head) + 7 + 5000 and conn.slow == 0
    conn.start()
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


async def test_the_frames_of_one_loop_pass_reach_each_recipient_in_one_write_in_order(connect: Connect) -> None:
    (publisher, *watchers), peers = zip(*(connect(Echo) for _ in range(3)), strict=True)
    publisher.others = watchers
    for conn in (publisher, *watchers):
        conn.start()
    await peers[0].send(b"".join(ws_frame(0x1, f"m{i}".encode()) for i in range(5)))
    for peer in peers:
        assert [await peer.frame() for _ in range(5)] == [(0x1, f"m{i}".encode()) for i in range(5)]
    assert [conn.sends for conn in (publisher, *watchers)] == [1, 1, 1]  # not 5 each
    # A lone message goes out on the next pass all the same.
    await peers[0].send(ws_frame(0x1, b"solo"))
    assert await peers[1].frame() == (0x1, b"solo")
    assert watchers[0].sends == 2


async def test_a_close_in_the_same_read_goes_out_after_the_held_frames(connect: Connect) -> None:
    conn, peer = connect(Echo)
    conn.start()
    await peer.send(ws_frame(0x1, b"a") + ws_frame(0x1, b"b") + ws_frame(0x8, struct.pack("!H", 1000)))
    assert [await peer.frame() for _ in range(3)] == [(0x1, b"a"), (0x1, b"b"), (0x8, struct.pack("!H", 1000))]
    assert await peer.eof()


class Raising(Recorder):
    def on_message(self, message: str | bytes) -> None:
        super().on_message(message)
        raise RuntimeError("handler bug")


async def test_a_failing_message_handler_closes_1011_and_reads_nothing_after(connect: Connect) -> None:
    conn, peer = connect(Raising)
    conn.start()
    await peer.send(ws_frame(0x1, b"one") + ws_frame(0x1, b"two"))
    opcode, payload = await peer.frame()
    assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1011))
    assert conn.messages == ["one"]


async def test_a_protocol_error_behind_a_held_message_waits_for_it(connect: Connect) -> None:
    conn, peer = connect()
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    conn.holds.append(hold)
    conn.start()
    await peer.send(ws_frame(0x1, b"one") + ws_frame(0x1, b"two") + ws_frame(0x1, b"x", mask=False))
    await asyncio.wait_for(conn.got_message.wait(), TIMEOUT)
    assert not conn.closing  # the violation is not judged before the held message is done
    hold.set_result(None)
    assert await peer.frame() == (0x8, struct.pack("!H", 1002) + b"client frames must be masked")
    assert conn.messages == ["one", "two"]
    assert await peer.eof()


async def test_the_close_echo_waits_behind_a_backlog_then_the_socket_closes(connect: Connect) -> None:
    conn, peer = connect(rcvbuf=4096)
    conn.start()
    big = b"\x82\x7e" + struct.pack("!H", 1000) + b"d" * 1000
    for _ in range(40):
        conn.write(big)
    await asyncio.sleep(0)  # the loop pass that sends what it can
    assert conn.pending_bytes > 0
    await peer.send(ws_frame(0x8, struct.pack("!H", 1000)))
    await asyncio.wait_for(conn.closed.wait(), TIMEOUT)  # the application hears at once
    assert [await peer.frame() for _ in range(40)] == [(0x2, b"d" * 1000)] * 40
    assert await peer.frame() == (0x8, struct.pack("!H", 1000))  # the echo comes after the backlog
    assert await peer.eof()
