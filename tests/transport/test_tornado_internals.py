"""Canaries for the Tornado internals tornado-ws relies on (tornado_ws/transport/tornado_internals.py).

Each test names the Tornado attribute it checks, so that a Tornado release that moves one
fails here, loudly, rather than somewhere in a handshake. The last test keeps every other
module of tornado_ws off Tornado's underscore names.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado
import tornado.web
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.testing import bind_unused_port
from tornado.websocket import WebSocketHandler

from tests.conftest import SECRET, TIMEOUT
from tests.rawws import expect_answers_behind_the_101, upgrade_request, upgrade_with_frames_behind
from tornado_ws.testing import HubServer, test_hub
from tornado_ws.transport import tornado_internals
from tornado_ws.transport.tornado_internals import accepting_protocol, request_context, served_stream, take_socket

PACKAGE = Path(tornado_internals.__file__).resolve().parent.parent
TORNADO = Path(tornado.__file__).resolve().parent


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


# -- IOStream and the asyncio bridge (take_socket) -----------------------------------------------


async def test_iostream_read_buffer_layout(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    stream = IOStream(ours)
    peer.sendall(b"HEAD\r\n\r\nbehind")
    assert await stream.read_until(b"\r\n\r\n") == b"HEAD\r\n\r\n"
    assert isinstance(getattr(stream, "_read_buffer", None), bytearray), "IOStream._read_buffer: not a bytearray"
    assert isinstance(getattr(stream, "_read_buffer_size", None), int), "IOStream._read_buffer_size is gone"
    assert not hasattr(stream, "_read_buffer_pos"), "IOStream._read_buffer_pos is back: unread bytes start at an offset"
    assert bytes(stream._read_buffer[: stream._read_buffer_size]) == b"behind", "IOStream._read_buffer's layout changed"
    assert not stream.writing()


async def test_asyncio_bridge_bookkeeping(pair: tuple[socket.socket, socket.socket]) -> None:
    io_loop: Any = IOLoop.current()
    for name, kind in (("readers", set), ("writers", set), ("handlers", dict)):
        assert isinstance(getattr(io_loop, name, None), kind), f"tornado.platform.asyncio.BaseAsyncIOLoop.{name}"
    assert getattr(io_loop, "selector_loop", None) is asyncio.get_running_loop(), "BaseAsyncIOLoop.selector_loop"
    fd = pair[0].fileno()
    io_loop.add_handler(fd, lambda fd, events: None, IOLoop.READ)
    try:
        assert fd in io_loop.readers and fd in io_loop.handlers and fd not in io_loop.writers, (
            "BaseAsyncIOLoop.add_handler no longer records READ handlers in readers/handlers"
        )
    finally:
        io_loop.remove_handler(fd)
    assert fd not in io_loop.readers and fd not in io_loop.handlers


async def test_take_socket_hands_over_unread_bytes_and_reader(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    stream = IOStream(ours)
    peer.sendall(b"HEAD\r\n\r\nframes")
    await stream.read_until(b"\r\n\r\n")
    stream.io_loop.add_handler(ours, lambda fd, events: None, IOLoop.READ)  # as HTTP1Connection leaves it
    sock, unread, registered = take_socket(stream)
    assert (sock, unread, registered) == (ours, b"frames", True)
    assert stream.socket is None  # a stray close() of the stream cannot close the socket
    # The new owner's add_reader replaces Tornado's reader in place, and it is the only one.
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_reader(sock.fileno(), lambda: got.set_result(sock.recv(100)))
    try:
        peer.sendall(b"more")
        assert await asyncio.wait_for(got, TIMEOUT) == b"more"
    finally:
        asyncio.get_running_loop().remove_reader(sock.fileno())


async def test_take_socket_refuses_a_stream_with_unsent_bytes(pair: tuple[socket.socket, socket.socket]) -> None:
    ours = pair[0]
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream = IOStream(ours)
    stream.write(b"x" * 4_000_000)  # more than the socket takes at once: the rest waits in Tornado
    assert stream.writing(), "IOStream.writing() no longer reports a pending write"
    with pytest.raises(RuntimeError, match="unsent bytes"):
        take_socket(stream)
    stream.close()


async def test_an_embedded_hub_answers_frames_sent_with_the_upgrade_request() -> None:
    # A plain HTTPServer (HubServer): Tornado's HTTP/1 connection reads the head, and the frames
    # behind it land in its IOStream buffer, which take_socket hands to the connection.
    server = HubServer(test_hub(jwt_secret=SECRET)).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(upgrade_with_frames_behind(server.port))
            await expect_answers_behind_the_101(reader)
        finally:
            writer.close()
    finally:
        await server.stop()


# -- the request context of the upgrade fast path (request_context) ------------------------------


def test_http_request_context(pair: tuple[socket.socket, socket.socket]) -> None:
    app = tornado.web.Application()
    server = HTTPServer(app, xheaders=True, trusted_downstream=["10.0.0.1"])
    assert (server.protocol, server.trusted_downstream) == (None, ["10.0.0.1"]), (
        "HTTPServer.protocol / trusted_downstream are gone"
    )

    class Conn:
        socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    try:
        context = request_context(Conn(), ("192.0.2.7", 5555), server)
    except TypeError as exc:  # pragma: no cover - what the canary is for
        pytest.fail(f"tornado.httpserver._HTTPRequestContext(stream, address, protocol, trusted_downstream): {exc}")
    finally:
        Conn.socket.close()
    assert (context.remote_ip, context.protocol, str(context)) == ("192.0.2.7", "http", "192.0.2.7")
    for name in ("_apply_xheaders", "_unapply_xheaders"):
        assert callable(getattr(context, name, None)), f"_HTTPRequestContext.{name} is gone (xheaders=True calls it)"
    context._apply_xheaders(HTTPHeaders({"X-Real-Ip": "198.51.100.3", "X-Scheme": "https"}))
    assert (context.remote_ip, context.protocol) == ("198.51.100.3", "https")
    context._unapply_xheaders()
    assert (context.remote_ip, context.protocol) == ("192.0.2.7", "http")


def test_http1_server_connection_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    stream = IOStream(pair[0])
    assert served_stream(HTTP1ServerConnection(stream)) is stream, "HTTP1ServerConnection.stream is gone"
    assert "server_conn" in inspect.signature(HTTPServer.on_close).parameters, "HTTPServer.on_close changed"


# -- WebSocketHandler.get's call of the protocol (accepting_protocol) ----------------------------


async def _teapot(handler: WebSocketHandler) -> None:
    handler.set_status(418)
    handler.finish(f"accepted {handler.path_args}")


class _Probe(WebSocketHandler):
    def get_websocket_protocol(self) -> Any:
        return accepting_protocol(_teapot)


async def test_websocket_handler_get_awaits_accept_connection() -> None:
    sock, port = bind_unused_port()
    server = HTTPServer(tornado.web.Application([(r"/probe/(\w+)", _Probe)]))
    server.add_sockets([sock])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port, "/probe/xyz"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
        response = head + await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        writer.close()
    finally:
        server.stop()
        await server.close_all_connections()
    assert response.startswith(b"HTTP/1.1 418 "), (
        "WebSocketHandler.get no longer awaits get_websocket_protocol().accept_connection(handler): " + repr(response)
    )
    assert response.endswith(b"accepted ['xyz']")


# -- nobody else touches Tornado's internals ------------------------------------------------------

#: Undocumented Tornado attributes without an underscore, fenced like the underscore ones.
UNDOCUMENTED = {"open_args", "open_kwargs", "ws_connection", "selector_loop", "readers", "writers"}


def _tornado_private_names() -> set[str]:
    names: set[str] = set()
    for path in TORNADO.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r"\bself\.(_[A-Za-z]\w*)", text))
        names.update(re.findall(r"^\s*(?:async )?def (_[A-Za-z]\w*)", text, re.M))
        names.update(re.findall(r"^(?:class )?(_[A-Za-z]\w*)", text, re.M))
    return {name for name in names if not name.startswith("__")}


def _own_private_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Underscore names tornado_ws defines itself (attributes, methods, slots)."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
                names.add(node.value)  # __slots__ entries
    return names


def test_only_the_fence_touches_tornado_internals() -> None:
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"))
        for path in PACKAGE.rglob("*.py")
        if path.name != "tornado_internals.py"
    }
    tornado_private, own = _tornado_private_names(), _own_private_names(trees)
    assert {"_read_buffer", "_HTTPRequestContext", "_accept_connection", "_sockets"} <= tornado_private
    found = []
    for path, tree in trees.items():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tornado":
                found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute):
                # An underscore name of Tornado's that tornado_ws never defines can only be Tornado's;
                # one that tornado_ws defines too must not be used on a Tornado subclass's self.
                theirs = node.attr in tornado_private and node.attr not in own
                if theirs or node.attr in UNDOCUMENTED:
                    found.append(f"{where}:{node.lineno} .{node.attr}")
    assert not found, "Tornado internals outside tornado_ws/transport/tornado_internals.py: " + ", ".join(found)


def test_no_tornado_subclass_shadows_or_reads_tornado_private_attributes() -> None:
    # For our subclasses of Tornado classes, `self._x` is Tornado's when a Tornado base defines _x.
    import tornado_ws.transport.guard as guard
    import tornado_ws.web.api as api
    import tornado_ws.web.base as base
    import tornado_ws.web.handler as handler

    found = []
    for module in (guard, api, base, handler):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            bases = [b for b in cls.__mro__ if b.__module__.split(".")[0] == "tornado"]
            if not bases:
                continue
            theirs = set()
            for base_cls in bases:
                theirs.update(re.findall(r"\bself\.(_[A-Za-z]\w*)", inspect.getsource(base_cls)))
                theirs.update(n for n in vars(base_cls) if n.startswith("_") and not n.startswith("__"))
            source = inspect.getsource(cls)
            used = set(re.findall(r"\bself\.(_[A-Za-z]\w*)", source)) | set(re.findall(r"def (_[A-Za-z]\w*)", source))
            found += [f"{cls.__qualname__}.{name}" for name in sorted(used & theirs)]
    assert not found, "our Tornado subclasses touch Tornado's private attributes: " + ", ".join(found)
