"""GuardedHTTPServer over Tornado's public API: TCPServer keeps its sockets, stop() stops accepting."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import tornado.web
from tornado.testing import bind_unused_port

from tornado_ws.transport.guard import GuardedHTTPServer


def test_tls_is_refused_at_construction() -> None:
    # The peek reads a plain HTTP request head: TLS bytes would never parse as one.
    with pytest.raises(ValueError, match="does not terminate TLS"):
        GuardedHTTPServer(tornado.web.Application(), ssl_options=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))


async def test_stop_closes_the_listening_socket_our_accept_loop_served() -> None:
    sock, port = bind_unused_port()
    server = GuardedHTTPServer(tornado.web.Application())
    server.add_sockets([sock])
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # accepted by our loop
    writer.close()
    server.stop()
    assert sock.fileno() == -1
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await server.close_all_connections()
