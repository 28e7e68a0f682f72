"""An HTTPServer that stays reachable when half-open connections pile up.

Tornado keeps every not-yet-upgraded connection until its header timeout, and
when the process runs out of file descriptors its accept loop spins on EMFILE
(logging each failure) while nobody else can connect. This server keeps such
connections under the descriptor limit, evicting the oldest, and pauses
``accept()`` briefly on EMFILE instead of spinning (docs/security.md, F3).
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from .hub import Registry

log = logging.getLogger("tornado_ws")

#: Descriptors kept free for upgraded WebSockets, log files and the like.
FD_RESERVE = 32
#: Connections accepted per readiness event before yielding to the loop (as Tornado does).
ACCEPT_BATCH = 128


class GuardedHTTPServer(HTTPServer):
    def initialize(self, *args: Any, registry: Registry | None = None, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._registry = registry
        self._order: dict[Any, None] = {}  # not-yet-upgraded connections, oldest first
        self._last_warning = 0.0

    def _cap(self) -> int:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        upgraded = self._registry.connection_count if self._registry is not None else 0
        return max(8, soft - FD_RESERVE - upgraded)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        # HTTPServer.handle_stream, keeping the new connection at hand (finding it in
        # Tornado's set afterwards would copy that set on every accept).
        context = _HTTPRequestContext(stream, address, self.protocol, self.trusted_downstream)
        conn = HTTP1ServerConnection(stream, self.conn_params, context)
        self._connections.add(conn)
        self._order[conn] = None
        conn.start_serving(self)
        # Count what we track, not Tornado's set: a closed stream leaves that set only on a later
        # loop pass, so counting it would go on evicting until even the newest connection is gone.
        while len(self._order) > self._cap():
            oldest = next(iter(self._order))
            self._order.pop(oldest)
            oldest.stream.close()

    def on_close(self, server_conn: object) -> None:
        self._order.pop(server_conn, None)
        super().on_close(server_conn)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        io_loop = IOLoop.current()
        stopped = False

        def resume() -> None:
            if not stopped:
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
                    io_loop.remove_handler(sock)
                    io_loop.call_later(0.1, resume)
                    now = time.monotonic()
                    if now - self._last_warning > 10:
                        self._last_warning = now
                        log.warning("out of file descriptors: pausing accept() for 100 ms")
                    return
                self._handle_connection(connection, address)

        io_loop.add_handler(sock, accept, IOLoop.READ)

        def remove() -> None:
            nonlocal stopped
            stopped = True
            io_loop.remove_handler(sock)

        return remove
