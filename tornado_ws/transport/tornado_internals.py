"""Every place tornado-ws relies on a Tornado internal, and why there is no public way.

Anything starting with ``_`` on a Tornado object, and a few undocumented attributes, can
change in a minor release (``IOStream._read_buffer_pos`` is gone, ``check_origin`` is no
longer called for same-origin requests since 6.6). They are touched here and nowhere else in ``tornado_ws`` (a test
greps the package for them), and each has a canary in
``tests/transport/test_tornado_internals.py`` that names the Tornado attribute when it
moves. Tornado versions checked: the oldest and newest that ``setup.py`` allows.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.iostream import IOStream

if TYPE_CHECKING:
    from tornado.websocket import WebSocketHandler, WebSocketProtocol


def take_socket(stream: IOStream) -> tuple[socket.socket, bytes, bool]:
    """Take the socket out of a detached ``IOStream`` nothing was written to.

    Returns the socket, the bytes the stream already read past the HTTP request (a client
    may send its first frames right behind the upgrade request), and whether the socket is
    still registered for reading with the running asyncio loop (then the new owner's
    ``add_reader`` replaces Tornado's reader in place: no epoll_ctl, no selector churn).
    The stream must not be used again.

    Relies on ``IOStream._read_buffer`` (a bytearray whose first ``_read_buffer_size``
    bytes are unread: no ``_read_buffer_pos`` offset, which older releases had) and on the
    asyncio bridge's bookkeeping (``BaseAsyncIOLoop.readers``, ``writers``, ``handlers``,
    ``selector_loop``). No public way: ``read_bytes(partial=True)`` reads the socket too
    and leaves a pending read when the buffer is empty, and ``IOLoop.remove_handler``
    would unregister the descriptor that the new owner registers again at once.
    """
    if stream.writing():
        raise RuntimeError("the stream has unsent bytes; adopt it before writing to it")
    sock = stream.socket
    fd = sock.fileno()
    io_loop: Any = stream.io_loop
    # Another IOLoop implementation has none of these: then unregister the public way.
    readers: set[int] = getattr(io_loop, "readers", set())
    writers: set[int] = getattr(io_loop, "writers", set())
    handlers: dict[int, Any] = getattr(io_loop, "handlers", {})
    registered = (
        fd in readers
        and fd not in writers
        and fd in handlers
        and getattr(io_loop, "selector_loop", None) is asyncio.get_running_loop()
    )
    if registered:
        readers.discard(fd)
        del handlers[fd]
    else:
        io_loop.remove_handler(sock)
    buffer: bytearray = stream._read_buffer
    unread = bytes(buffer[: stream._read_buffer_size])
    stream.socket = None  # type: ignore[assignment]  # a stray close() of the stream cannot close our socket
    return sock, unread, registered


def request_context(connection: Any, address: Any, server: HTTPServer) -> Any:
    """The context a request on ``connection`` (which has a ``socket``) needs, as ``server`` builds it.

    ``HTTPServerRequest`` reads ``remote_ip`` and ``protocol`` from ``connection.context``,
    and with ``xheaders=True`` HTTPServer's adapter calls its ``_apply_xheaders`` and
    ``_unapply_xheaders``: only Tornado's private ``_HTTPRequestContext`` does all that, and
    the upgrade fast path (:class:`~tornado_ws.transport.upgrade.UpgradeConnection`) has no
    ``HTTP1ServerConnection`` to make one. ``protocol`` and ``trusted_downstream`` are
    HTTPServer's (undocumented) copies of its constructor arguments.
    """
    return _HTTPRequestContext(connection, address, server.protocol, server.trusted_downstream)


def served_stream(server_conn: object) -> IOStream:
    """The ``IOStream`` of the ``HTTP1ServerConnection`` that ``HTTPServer.on_close`` reports.

    ``stream`` is an undocumented attribute; the guarded server needs it to tell which of
    the streams it handed to ``super().handle_stream`` has gone.
    """
    stream: IOStream = server_conn.stream  # type: ignore[attr-defined]
    return stream


class _Accept:
    """What ``WebSocketHandler.get`` awaits after its header and origin checks.

    ``get`` calls ``get_websocket_protocol()`` and, if that returns something, awaits its
    ``accept_connection(handler)``; nothing else of the protocol object is used before the
    handler detaches the socket. Tornado's own ``WebSocketProtocol13`` would need its private
    ``_WebSocketParams`` to be built and its private ``_accept_connection`` overridden to
    write the 101 ourselves; this stand-in needs neither. It holds no reference to the
    handler, so handler and protocol form no cycle.
    """

    __slots__ = ("_accept",)

    def __init__(self, accept: Callable[[WebSocketHandler], Awaitable[None]]) -> None:
        self._accept = accept

    async def accept_connection(self, handler: WebSocketHandler) -> None:
        await self._accept(handler)

    # Tornado calls these only if the HTTP connection dies before the 101 (on_connection_close),
    # when there is nothing of ours to close.
    def is_closing(self) -> bool:  # pragma: no cover - see above
        return True

    def close(self, code: int | None = None, reason: str | None = None) -> None:  # pragma: no cover
        pass

    def on_connection_close(self) -> None:  # pragma: no cover
        pass


def accepting_protocol(accept: Callable[[WebSocketHandler], Awaitable[None]]) -> WebSocketProtocol:
    """A ``get_websocket_protocol()`` result whose accept step is ``accept(handler)``.

    ``accept`` must be a plain function (not a bound method of the handler), so that the
    handler can die by refcount. See :class:`_Accept` for what this relies on.
    """
    return cast("WebSocketProtocol", _Accept(accept))
