"""An HTTPServer that stays reachable when half-open connections pile up.

Tornado keeps every not-yet-upgraded connection until its header timeout, and
when the process runs out of file descriptors its accept loop spins on EMFILE
(logging each failure) while nobody else can connect. This server keeps such
connections under the descriptor limit, evicting the oldest, and pauses
``accept()`` briefly on EMFILE instead of spinning (docs/security.md, F3).

It also peeks at a new connection's first bytes before Tornado sees it: a whole
WebSocket upgrade request for ``/ws/…`` is consumed and routed over an
:class:`~tornado_ws.transport.upgrade.UpgradeConnection` (the handshake's fast path,
docs/performance.md); anything else reaches Tornado's HTTP/1 connection untouched,
since nothing was read, and is answered as always.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado import gen
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPInputError
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from tornado_ws.core.registry import Registry
from tornado_ws.transport.tornado_internals import request_context, served_stream
from tornado_ws.transport.upgrade import PEEK_SIZE, UpgradeConnection, parse_upgrade_head
from tornado_ws.transport.websocket import Lingering

log = logging.getLogger("tornado_ws")

#: Descriptors kept free for upgraded WebSockets, log files and the like.
FD_RESERVE = 32
#: Connections accepted per readiness event before yielding to the loop (as Tornado does).
ACCEPT_BATCH = 128


class GuardedHTTPServer(HTTPServer):
    def initialize(
        self,
        *args: Any,
        registry: Registry | None = None,
        lingering: Lingering | None = None,
        upgrade_prefix: str = "/ws",
        **kwargs: Any,
    ) -> None:
        super().initialize(*args, **kwargs)
        if self.ssl_options is not None:
            # The peek reads a plain HTTP request; TLS is terminated in front (docs/operations.md).
            raise ValueError("GuardedHTTPServer does not terminate TLS")
        self._registry = registry
        # WebSockets refused at the handshake that are still closing: they hold descriptors
        # too, and are the first to go when the process runs short of them.
        self._lingering = lingering if lingering is not None else Lingering()
        # Upgrade requests under this path take the fast path; the WebSocket route's refusals
        # are all short, which UpgradeConnection relies on.
        self._upgrade_prefix = upgrade_prefix.encode()
        # Not-yet-upgraded connections, oldest first, each with what closes it.
        self._order: dict[Any, Callable[[], None]] = {}
        # Accepted sockets that have sent nothing yet: fd -> (socket, address, accepted at).
        self._waiting: dict[int, tuple[socket.socket, Any, float]] = {}
        self._sweeping = False
        self._last_warning = 0.0

    def _cap(self) -> int:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        upgraded = self._registry.connection_count if self._registry is not None else 0
        return max(8, soft - FD_RESERVE - upgraded)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        # Keyed by stream: that is what on_close's connection leads back to, without a search
        # of Tornado's set of connections.
        self._order[stream] = stream.close
        super().handle_stream(stream, address)
        self._evict()

    def _evict(self) -> None:
        # Count what we track, not Tornado's set: a closed stream leaves that set only on a later
        # loop pass, so counting it would go on evicting until even the newest connection is gone.
        cap, lingering = self._cap(), self._lingering
        while len(self._order) + len(lingering) > cap:
            if not lingering.evict_oldest():
                oldest = next(iter(self._order))
                self._order.pop(oldest)()

    def on_close(self, server_conn: object) -> None:
        self._order.pop(served_stream(server_conn), None)
        super().on_close(server_conn)

    async def close_all_connections(self) -> None:
        for fd in list(self._waiting):
            self._drop_waiting(fd)
        await super().close_all_connections()

    # -- before Tornado: the peek at a new connection's first bytes -------------------

    def _take(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        if self._lingering:
            self._evict()  # room for this one before it becomes a WebSocket
        if self._peek(sock, address, registered=False):
            return
        # The request is usually there at accept(); when not, wait for it without a timer per
        # connection: one sweep a second closes what stays silent past the header timeout.
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        self._waiting[fd] = (sock, address, loop.time())
        self._order[fd] = lambda: self._drop_waiting(fd)
        loop.add_reader(fd, self._on_first_bytes, fd)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(1.0, self._sweep)
        self._evict()

    def _on_first_bytes(self, fd: int) -> None:
        sock, address, _ = self._waiting[fd]
        if self._peek(sock, address, registered=True):
            del self._waiting[fd]
            self._order.pop(fd, None)

    def _peek(self, sock: socket.socket, address: Any, *, registered: bool) -> bool:
        """Hand ``sock`` on by what its first bytes are; False while it has sent none."""
        try:
            data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        upgrade = parse_upgrade_head(data, self._upgrade_prefix) if data else None
        if upgrade is None:
            if registered:
                asyncio.get_running_loop().remove_reader(sock.fileno())
            if data:
                self._to_tornado(sock, address)
            else:  # gone before it said anything
                sock.close()
            return True
        length, start_line, headers = upgrade
        sock.recv(length)  # the head only: frames sent right behind it stay for the WebSocket
        conn = UpgradeConnection(sock, registered=registered)
        if registered:  # the handler runs in a Task, a pass from now: point the reader at a placeholder
            asyncio.get_running_loop().add_reader(sock.fileno(), conn.hold)
        conn.context = request_context(conn, address, self)
        try:
            delegate = self.start_request(conn, conn)
            pending = delegate.headers_received(start_line, headers)
            if pending is None:
                delegate.finish()
            else:  # a handler that streams request bodies: as HTTP1Connection, finish once it is ready
                gen.convert_yielded(pending).add_done_callback(lambda _: delegate.finish())
        except HTTPInputError as exc:  # a missing or bad Host, say: Tornado's own answer
            log.info("malformed HTTP request from %s: %s", conn.context, exc)
            conn.bad_request()
        except Exception:
            log.exception("upgrade request failed")
            conn.abort()
        return True

    def _to_tornado(self, sock: socket.socket, address: Any) -> None:
        # What TCPServer does with a new connection (without TLS: initialize refuses it).
        try:
            stream = IOStream(sock, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
            self.handle_stream(stream, address)
        except Exception:
            log.exception("error in connection callback")
            sock.close()

    def _drop_waiting(self, fd: int) -> None:
        sock = self._waiting.pop(fd)[0]
        self._order.pop(fd, None)
        asyncio.get_running_loop().remove_reader(fd)
        sock.close()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() - (self.conn_params.header_timeout or 3600.0)
        for fd, (_, _, accepted) in list(self._waiting.items()):
            if accepted > deadline:
                break  # oldest first: the rest are younger
            self._drop_waiting(fd)
        if self._waiting:
            loop.call_later(1.0, self._sweep)
        else:
            self._sweeping = False

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        sockets = list(sockets)
        # TCPServer keeps the sockets (stop() closes them, and unregisters each one's fd, which
        # then is our accept loop's); only the accept loop is replaced by ours.
        super().add_sockets(sockets)
        io_loop = IOLoop.current()
        for sock in sockets:
            io_loop.remove_handler(sock)
            self._accept_on(sock, io_loop)

    def _accept_on(self, sock: socket.socket, io_loop: IOLoop) -> None:
        def resume() -> None:
            if sock.fileno() >= 0:  # not closed by stop() during the pause
                io_loop.add_handler(sock, accept, IOLoop.READ)

        def accept(fd: Any, events: int) -> None:
            for _ in range(ACCEPT_BATCH):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE):
                        raise
                    while self._lingering.evict_oldest():
                        pass  # refused connections first: their close frame has been sent
                    io_loop.remove_handler(sock)
                    io_loop.call_later(0.1, resume)
                    now = time.monotonic()
                    if now - self._last_warning > 10:
                        self._last_warning = now
                        log.warning("out of file descriptors: pausing accept() for 100 ms")
                    return
                self._take(connection, address)

        io_loop.add_handler(sock, accept, IOLoop.READ)
