"""An upgraded WebSocket on its bare socket, driven straight by the asyncio loop.

Tornado does the HTTP part (parsing, routing, the 101 response); after that a
connection is this one small object instead of a ``WebSocketHandler`` with its
request, ``HTTP1Connection``, ``IOStream`` and a reader Task. That is what keeps
an idle connection to a few KiB and a broadcast to one ``send()`` per member
(docs/performance.md). Framing rules live in :mod:`tornado_ws.core.frames`, the close
handshake's rules in :mod:`tornado_ws.core.closing`; this module does their I/O.

Subclasses implement :meth:`on_message`, :meth:`on_ping`, :meth:`on_pong`,
:meth:`on_slow` and :meth:`on_closed`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Hashable

from tornado_ws.core import frames
from tornado_ws.core.closing import CLOSED, CLOSING, DONE, OPEN, CloseHandshake

log = logging.getLogger("tornado_ws")

__all__ = ["CLOSED", "CLOSING", "DONE", "OPEN", "Lingering", "WebSocketConnection"]

#: Seconds a peer gets to answer our close frame before the socket is dropped.
CLOSE_TIMEOUT = 5.0
#: The same for a connection refused at the handshake (bad token, say): it is nobody's member
#: and its peer may be a flood that never answers, so its descriptor is given back sooner.
REFUSED_CLOSE_TIMEOUT = 1.0
#: Bytes read per readiness event: a chatty client cannot starve the others.
RECV_SIZE = 65536
#: Signals one connection holds unsent (distinct slots) before it drops new ones.
MAX_PENDING_SIGNALS = 256
#: Bytes of signals written in one go once the socket drains: what may sit in the outbound
#: buffer because of signals, far below any --max-outbound-buffer.
SIGNAL_BATCH_BYTES = 16384
_AGAIN = (BlockingIOError, InterruptedError)

#: Per event loop, the connections whose frames wait for the loop's next pass (see ``write``).
_held_by_loop: dict[asyncio.AbstractEventLoop, list[WebSocketConnection]] = {}


def _flush_loop(loop: asyncio.AbstractEventLoop) -> None:
    for conn in _held_by_loop.pop(loop, ()):
        conn._flush_held()


class Lingering:
    """Connections refused at the handshake, waiting for their peer's close frame.

    They hold a descriptor each but belong to no session, so the registry does not count
    them: this does, for ``--max-connections`` and the server's descriptor cap, and gives
    them up first (oldest first) when a newcomer needs the room. A flood of refused
    handshakes then cannot lock good clients out.
    """

    __slots__ = ("_conns",)

    def __init__(self) -> None:
        self._conns: dict[WebSocketConnection, None] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def add(self, conn: WebSocketConnection) -> None:
        if conn.ws_state != CLOSED:
            self._conns[conn] = None
            conn._lingering = self

    def discard(self, conn: WebSocketConnection) -> None:
        self._conns.pop(conn, None)

    def evict_oldest(self) -> bool:
        """Drop the oldest refused connection's socket; False when there is none."""
        if not self._conns:
            return False
        next(iter(self._conns)).abort()  # its teardown discards it
        return True


class WebSocketConnection:
    """The server side of one WebSocket: read frames, write bytes, close properly."""

    __slots__ = (
        "_close_timer",
        "_corked",
        "_fd",
        "_handshake",
        "_held",
        "_held_writes",
        "_lingering",
        "_loop",
        "_out",
        "_out_limit",
        "_parser",
        "_pending_pong",
        "_reading",
        "_signals",
        "_signals_listed",
        "_sock",
        "_unread",
        "last_seen",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_message_size: int,
        max_outbound_buffer: int,
        unread: bytes = b"",
        head: bytes = b"",
        registered: bool = False,
    ) -> None:
        if sock.getblocking():
            sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are small and latency matters more than packet count.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._parser = frames.FrameParser(max_message_size)
        # ``head`` (the 101 response) waits with whatever is written before start() (the
        # welcome, or a refusal's close frame): one segment instead of two, one send() less.
        self._out: bytearray | None = bytearray(head) if head else None
        self._corked = bool(head)
        self._out_limit = max_outbound_buffer
        self._pending_pong: bytes | None = None
        self._unread = unread
        self._close_timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._held = False
        # One frame as bytes, several as a list: most passes hold one frame per member. Before
        # start(), an unscheduled list: what open() writes waits there for start() to send.
        self._held_writes: bytes | list[bytes] | None = [] if head else None
        self._lingering: Lingering | None = None
        #: Signals not written yet, by slot: a newer one in the same slot replaces the older.
        self._signals: dict[Hashable, bytes] | None = None
        self._signals_listed = False
        self._handshake = CloseHandshake()
        self.last_seen = self._loop.time()
        if registered:
            # The fd still has Tornado's reader on this loop: point it at a placeholder now
            # (in place, no system call) and at _on_readable in start().
            self._loop.add_reader(self._fd, self._pause_reading)
            self._reading = True

    # -- to be implemented by the subclass -------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """A whole text (``str``) or binary message. Return an awaitable to hold the
        next frames of this connection until it is done (per-sender order)."""
        return None

    def on_ping(self, payload: bytes) -> None:
        """A ping arrived (the pong has already been sent)."""

    def on_pong(self, payload: bytes) -> None:
        """A pong arrived."""

    def on_slow(self) -> None:
        """More than ``max_outbound_buffer`` bytes are waiting for the peer to read them."""

    def on_closed(self) -> None:
        """The WebSocket is closed (handshake over, failed, or the socket gone); called exactly once."""

    # -- state ---------------------------------------------------------------

    @property
    def ws_state(self) -> int:
        """OPEN, CLOSING, DONE or CLOSED (:mod:`tornado_ws.core.closing`)."""
        return self._handshake.state

    @property
    def close_code(self) -> int | None:
        """The code of the close frame the peer sent (None: none, or it had no code)."""
        return self._handshake.close_code

    @property
    def server_close_code(self) -> int | None:
        """The code of the close frame we sent first, if we did."""
        return self._handshake.server_close_code

    @property
    def closing(self) -> bool:
        """True once a close frame went out or the socket is gone: nothing more will be sent."""
        return self._handshake.state != OPEN

    @property
    def pending_bytes(self) -> int:
        """Bytes written but not yet accepted by the kernel."""
        writes = self._held_writes
        held = 0 if writes is None else len(writes) if isinstance(writes, bytes) else sum(map(len, writes))
        return held + (len(self._out) if self._out is not None else 0)

    # -- reading -------------------------------------------------------------

    def start(self) -> None:
        """Send what was held back and start reading (after the join, so the first frames see a member)."""
        if self._handshake.state == CLOSED:
            return
        if self._corked:
            self._flush_held()  # the welcome, written during open(), joins the 101
            held, self._out, self._corked = self._out, None, False
            if held:
                self._send(bytes(held))
        if self._reading:  # the reader inherited at adoption: take it over in place
            self._loop.add_reader(self._fd, self._on_readable)
        unread, self._unread = self._unread, b""
        if unread and self._handshake.state != CLOSED:
            self._receive(unread)
        if not self._held:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self._handshake.state != CLOSED:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(RECV_SIZE)
        except _AGAIN:
            return
        except OSError:
            self._teardown()
            return
        if not data:
            self._teardown()
        elif not self._handshake.discards_input:
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        self.last_seen = self._loop.time()
        parser = self._parser
        events = parser.feed(data)
        if parser.error is not None:
            self._handshake.protocol_error(parser.error)
        if events:
            self._dispatch(events, 0)
        if parser.error is not None and not self._held:
            self._fail()

    def _dispatch(self, events: list[tuple[int, str | bytes]], index: int) -> None:
        handshake = self._handshake
        for i in range(index, len(events)):
            state = handshake.state
            if state >= DONE:
                return
            opcode, payload = events[i]
            if opcode < frames.CLOSE:
                if state != OPEN:
                    continue  # after our close frame, data is read and dropped (RFC 6455 5.5.1)
                try:
                    result = self.on_message(payload)
                except Exception:
                    log.exception("message handler failed")
                    self.close(1011, "internal error")
                    continue
                if result is not None:
                    self._hold(result, events, i + 1)
                    return
            elif opcode == frames.PING:
                assert isinstance(payload, bytes)
                if state == OPEN:
                    self._pong(payload)
                self.on_ping(payload)
            elif opcode == frames.PONG:
                assert isinstance(payload, bytes)
                self.on_pong(payload)
            else:
                assert isinstance(payload, bytes)
                self._on_close_frame(payload)
                return

    def _hold(self, result: Awaitable[None], events: list[tuple[int, str | bytes]], index: int) -> None:
        """Read nothing more until ``result`` is done, then carry on with the rest of ``events``."""
        self._held = True
        self._pause_reading()

        def resume(done: asyncio.Future[None]) -> None:
            self._held = False
            if not done.cancelled() and done.exception() is not None:
                log.error("message handler failed", exc_info=done.exception())
                self.close(1011, "internal error")
            if self._handshake.state >= DONE:
                return
            self._dispatch(events, index)
            if self._held:
                return  # held again by a later message
            if self._parser.error is not None:
                self._fail()
            else:
                self._resume_reading()

        asyncio.ensure_future(result).add_done_callback(resume)

    def _on_close_frame(self, payload: bytes) -> None:
        handshake = self._handshake
        if handshake.accepts_data:
            self._flush_held()  # what was written before the peer's close goes out before the reply
        reply = handshake.receive_close(payload)
        if reply is not None:
            self._send(reply)
        self._ended()

    def _fail(self) -> None:
        """Act on the parser's error, once the messages before it are handled."""
        handshake = self._handshake
        if handshake.state >= DONE:
            return
        if handshake.accepts_data:
            self._flush_held()
        reply = handshake.fail()
        if reply is not None:
            self._send(reply)
        self._ended()

    # -- writing -------------------------------------------------------------

    def _pong(self, payload: bytes) -> None:
        self._flush_held()
        if self._out is None:
            self._send(frames.encode(frames.PONG, payload))
        else:
            # Backed up: answer only the latest ping once the backlog drains (RFC 6455 5.5.3
            # allows it), so a client that pings without reading cannot grow our buffer.
            self._pending_pong = payload

    def write(self, wire: bytes) -> None:
        """Send one whole frame on this loop pass; dropped once the connection is closing.

        Frames wait until the event loop's next pass and then leave in one send() per
        connection: everything the pass published to a member (several messages read from
        one publisher, or from several publishers of its session) costs one system call,
        which is most of the price of a delivery (docs/performance.md).
        """
        if self._handshake.state != OPEN:
            return
        held = self._held_writes
        if held is not None:
            if isinstance(held, bytes):
                self._held_writes = [held, wire]
            else:
                held.append(wire)
            return
        self._held_writes = wire
        self._flush_on_next_pass()

    def _flush_on_next_pass(self) -> None:
        loop = self._loop
        waiting = _held_by_loop.get(loop)
        if waiting is None:
            _held_by_loop[loop] = waiting = []
            loop.call_soon(_flush_loop, loop)
        waiting.append(self)

    def _flush_held(self) -> None:
        """Send the frames waiting for the loop's next pass (first, when anything else goes out)."""
        held = self._held_writes
        if held is not None:
            self._held_writes = None
            if self._handshake.state != CLOSED:
                self._send(held if isinstance(held, bytes) else b"".join(held))
        if self._signals_listed:
            self._signals_listed = False
            self._flush_signals()

    def write_signal(self, slot: Hashable, wire: bytes) -> bool:
        """Send an ephemeral frame once nothing else waits: after the durable frames, and only
        while the socket keeps up. Until it goes out, a newer frame in the same ``slot``
        replaces it (latest wins), so a slow reader gets the newest, not a backlog. Signals
        never count toward the slow-consumer limit. False when it was dropped (closing, or
        :data:`MAX_PENDING_SIGNALS` other slots waiting)."""
        if self._handshake.state != OPEN or self._corked:
            return False
        signals = self._signals
        if signals is None:
            signals = self._signals = {}
        elif slot not in signals and len(signals) >= MAX_PENDING_SIGNALS:
            return False
        signals[slot] = wire
        if self._out is None and not self._signals_listed:
            # Sent on the loop's next pass, with whatever else this pass writes to us.
            self._signals_listed = True
            if self._held_writes is None:  # else write() listed us already
                self._flush_on_next_pass()
        return True

    def _flush_signals(self) -> None:
        """Write waiting signals while the socket keeps up (up to SIGNAL_BATCH_BYTES at a time)."""
        signals = self._signals
        budget = min(SIGNAL_BATCH_BYTES, self._out_limit // 4)
        while signals and self._out is None and self._handshake.state == OPEN:
            batch, size = [], 0
            while signals and size < budget:
                wire = signals.pop(next(iter(signals)))
                batch.append(wire)
                size += len(wire)
            self._send(b"".join(batch), durable=False)  # all taken: the next batch, if any

    def _send(self, wire: bytes, *, durable: bool = True) -> None:
        """Write ``wire`` or buffer what the socket does not take; a buffer over the limit makes
        the connection a slow consumer, unless the bytes are signals (``durable=False``)."""
        out = self._out
        if out is None:
            try:
                sent = self._sock.send(wire)
            except _AGAIN:
                sent = 0
            except OSError:
                # Not inside the caller's loop (a broadcast, say): tear down on the next pass.
                self._loop.call_soon(self._teardown)
                return
            if sent == len(wire):
                return
            self._out = out = bytearray(memoryview(wire)[sent:])
            self._loop.add_writer(self._fd, self._on_writable)
        else:
            out += wire
        if durable and len(out) > self._out_limit and self._handshake.state == OPEN and not self._corked:
            self.on_slow()

    def _on_writable(self) -> None:
        out = self._out
        if out is None:
            return
        try:
            sent = self._sock.send(out)
        except _AGAIN:
            return
        except OSError:
            self._teardown()
            return
        del out[:sent]
        if not out:
            self._out = None
            self._loop.remove_writer(self._fd)
            pong, self._pending_pong = self._pending_pong, None
            if pong is not None and self._handshake.state == OPEN:
                self._send(frames.encode(frames.PONG, pong))
            if self._signals:
                self._flush_signals()
            if self._handshake.state == DONE:
                self._hang_up()

    # -- closing -------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Send a close frame; the socket closes when the peer answers, or after ``timeout``
        (default :data:`CLOSE_TIMEOUT`)."""
        handshake = self._handshake
        if not handshake.accepts_data:
            return  # a second close() is a no-op
        self._flush_held()
        wire = handshake.close(code, reason)
        assert wire is not None
        self._send(wire)
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT if timeout is None else timeout, self._teardown)

    def refuse(self, code: int, reason: str, lingering: Lingering) -> None:
        """Close a connection refused at the handshake: counted in ``lingering`` until its
        socket is gone, which is at most :data:`REFUSED_CLOSE_TIMEOUT` seconds away."""
        self.close(code, reason, timeout=REFUSED_CLOSE_TIMEOUT)
        lingering.add(self)

    def _ended(self) -> None:
        """The close handshake is over (or failed): the WebSocket is closed, only the socket's end is left."""
        self.on_closed()
        self._hang_up()

    def _hang_up(self) -> None:
        """Close the socket, or half-close it (``CloseHandshake.half_close``), once our last bytes are out."""
        half_close = self._handshake.half_close
        if self._out is None and not half_close:
            self._teardown()
            return
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._teardown)
        if self._out is not None:
            return  # _on_writable comes back here when the bytes are out
        # Discard what the peer still sends, and close on its EOF (or the timer).
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._teardown()
            return
        self._resume_reading()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (as a dead network would)."""
        self._teardown()

    def _teardown(self) -> None:
        handshake = self._handshake
        if handshake.state == CLOSED:
            return
        tell = handshake.lost()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._pause_reading()
        if self._out is not None:
            self._out = None
            self._loop.remove_writer(self._fd)
        self._sock.close()
        if self._lingering is not None:
            self._lingering.discard(self)
            self._lingering = None
        if tell:
            self.on_closed()
