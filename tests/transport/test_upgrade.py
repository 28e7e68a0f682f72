"""The upgrade fast path (tornado_ws/upgrade.py) and the peek in front of Tornado (guard.py).

Every other test that connects through the ``port`` fixture also goes through it: the
server fixture is the CLI's GuardedHTTPServer. These are the cases around the edges.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.web
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from tornado.httputil import HTTPHeaders, HTTPInputError
from tornado.ioloop import IOLoop
from tornado.testing import bind_unused_port

from tests.conftest import Clients, make_token, wait_for
from tests.rawws import (
    expect_answers_behind_the_101,
    read_frame,
    text_frame,
    upgrade_request,
    upgrade_with_frames_behind,
)
from tornado_ws.transport import upgrade
from tornado_ws.transport.guard import GuardedHTTPServer
from tornado_ws.transport.upgrade import UpgradeConnection, parse_upgrade_head

# -- what counts as a whole, plain upgrade request -------------------------------------------------


def test_a_whole_upgrade_head_is_parsed_and_measured() -> None:
    head = upgrade_request(8888, "/ws/room?token=abc")
    parsed = parse_upgrade_head(head + text_frame({"type": "ping"}), b"/ws/")
    assert parsed is not None
    length, start, headers = parsed
    assert length == len(head)  # the frame behind it is not part of the head
    assert (start.method, start.path, start.version) == ("GET", "/ws/room?token=abc", "HTTP/1.1")
    assert headers["Upgrade"] == "websocket" and headers["Sec-WebSocket-Version"] == "13"


WHOLE = upgrade_request(8888, "/ws/room")
NOT_FOR_THE_FAST_PATH = {
    "head-not-finished": WHOLE[:-2],
    "post": WHOLE.replace(b"GET ", b"POST ", 1),
    "http-1.0": WHOLE.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "no-upgrade-header": WHOLE.replace(b"Upgrade: websocket\r\n", b""),
    "upgrade-to-h2c": WHOLE.replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    "content-length": WHOLE[:-2] + b"Content-Length: 5\r\n\r\nhello",
    "chunked-body": WHOLE[:-2] + b"Transfer-Encoding: chunked\r\n\r\n",
    "expect-continue": WHOLE[:-2] + b"Expect: 100-continue\r\n\r\n",
    "bare-lf-line-ends": WHOLE.replace(b"\r\n", b"\n"),
    "leading-crlf": b"\r\n" + WHOLE,
    "header-without-colon": WHOLE[:-2] + b"X-Broken\r\n\r\n",
    "http-0.9-line": b"GET /ws/room\r\n\r\n",
    "lowercase-method": WHOLE.replace(b"GET ", b"get ", 1),
    "outside-the-prefix": WHOLE.replace(b"GET /ws/room", b"GET /healthz", 1),
}


@pytest.mark.parametrize("case", sorted(NOT_FOR_THE_FAST_PATH))
def test_anything_else_is_left_to_tornado(case: str) -> None:
    assert parse_upgrade_head(NOT_FOR_THE_FAST_PATH[case], b"/ws/") is None


TOKEN_CHARS = "Aa-_!~`|^.0+'%$#&*"
FIELD_CHARS = "a Z9 \t!~\"',;=\x80\xe9\xff"
BAD_CHARS = " :\x00\x01\x7f\u0100@()\r\n"
NAMES = st.text(TOKEN_CHARS, min_size=1, max_size=6) | st.text(TOKEN_CHARS + BAD_CHARS, max_size=6)
VALUES = st.text(FIELD_CHARS, max_size=8) | st.text(FIELD_CHARS + BAD_CHARS, max_size=8)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(NAMES, VALUES),
        max_size=6,
    )
)
def test_the_fast_header_parse_agrees_with_tornados(fields: list[tuple[str, str]]) -> None:
    """Whatever the fast path accepts, Tornado accepts with the same fields; whatever Tornado
    refuses, the fast path leaves to Tornado (which then answers 400)."""
    block = "".join(f"{name}:{value}\r\n" for name, value in fields)
    head = f"GET /ws/room HTTP/1.1\r\nUpgrade: websocket\r\n{block}\r\n".encode("latin1", "replace")
    assume(b"\r\n\r\n" not in head[:-4])  # an empty line inside would end the head early
    try:
        expected = list(HTTPHeaders.parse(head.decode("latin1").split("\r\n", 1)[1].rsplit("\r\n", 1)[0]).get_all())
    except HTTPInputError:
        expected = None
    parsed = parse_upgrade_head(head, b"/ws/")
    if parsed is None:
        # Only heads Tornado refuses, or accepts for its bare-LF leniency, are left to it.
        assert expected is None or b"\n" in head.replace(b"\r\n", b""), "a plain head missed the fast path"
        event("left to Tornado")
        return
    event("fast path")
    assert expected is not None, "the fast path took a head Tornado refuses"
    assert list(parsed[2].get_all()) == expected


# -- served through the CLI's server --------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and the body (by Content-Length) of one HTTP response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def silent_connection(server: GuardedHTTPServer, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection the server has accepted and is waiting on for its first bytes."""
    waiting = len(server._waiting)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await wait_for(lambda: len(server._waiting) > waiting)  # a poll: accepting it tells the client nothing
    return reader, writer


async def test_an_upgrade_sent_after_a_pause_is_served_with_the_frames_behind_it(
    port: int, http_server: GuardedHTTPServer
) -> None:
    reader, writer = await silent_connection(http_server, port)
    try:
        writer.write(upgrade_with_frames_behind(port))
        await expect_answers_behind_the_101(reader)
        assert not http_server._waiting and not http_server._connections  # Tornado's HTTP/1 never involved
    finally:
        writer.close()


async def test_an_upgrade_already_there_at_accept_is_served_at_once(port: int, http_server: GuardedHTTPServer) -> None:
    # connect() completes in the kernel's backlog, and the request is sent before this loop runs
    # the server's accept(): the peek at accept finds it whole.
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(upgrade_with_frames_behind(port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        await expect_answers_behind_the_101(reader)
        assert not http_server._waiting and not http_server._connections
    finally:
        writer.close()


async def test_closed_connections_leave_nothing_for_the_cyclic_collector(clients: Clients, registry: Any) -> None:
    # Each handshake builds a handler, a request, a context and a Connection: all must die by
    # refcount when the connection ends (a cycle would make every connection a collector's job).
    server_types = {"SessionHandler", "HTTPServerRequest", "UpgradeConnection", "Connection", "Membership"}
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(5):
            client, _ = await clients.join("room", f"user{n}")
            await client.publish(n)
            await client.close()
            await wait_for(lambda: registry.connection_count == 0)  # a poll: it was alone, no user_left to await
        gc.collect()
        assert not {type(o).__name__ for o in gc.garbage} & server_types
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_a_refused_upgrade_is_answered_whole_and_closed_once_the_client_is_done(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Bytes behind the head stay unread by the server: closing on them would reset the
        # connection and could destroy the answer before the client reads it.
        writer.write(upgrade_request(port, "/ws/room", version="8") + b"\x81\x85" + b"x" * 64)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 426 ")
        assert b"\r\nConnection: close\r\n" in head and b"\r\nSec-Websocket-Version: 13\r\n" in head
        assert await asyncio.wait_for(reader.read(), 5) == b""  # half-closed after the answer
        writer.write_eof()
    finally:
        writer.close()


async def test_a_refused_client_that_never_closes_is_closed_after_the_linger(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upgrade, "LINGER", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, "/ws/room", extra="Origin: https://attacker.example\r\n"))
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 403 ")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        # The server closed its side completely: writing now meets a reset, not a listener.
        with pytest.raises(ConnectionError):
            for _ in range(50):
                writer.write(b"x" * 1024)
                await writer.drain()
                await asyncio.sleep(0.02)
    finally:
        writer.close()


async def test_upgrade_requests_for_other_routes_are_left_to_tornado(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(2):  # Tornado's keep-alive, not the fast path's one answer and close
            writer.write(upgrade_request(port, "/healthz"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
            assert json.loads(body) == {"status": "ok"}
    finally:
        writer.close()


async def test_a_head_sent_in_pieces_is_left_to_tornado_and_still_upgrades(
    port: int, http_server: GuardedHTTPServer
) -> None:
    reader, writer = await silent_connection(http_server, port)
    try:
        request = upgrade_request(port, f"/ws/room?token={make_token('alice')}")
        writer.write(request[:20])
        # A poll: nothing on the wire says Tornado's HTTP/1 connection has taken it over.
        await wait_for(lambda: len(http_server._connections) == 1)
        writer.write(request[20:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert json.loads((await read_frame(reader))[1])["type"] == "welcome"
    finally:
        writer.close()


async def test_a_client_that_says_nothing_is_closed_at_the_header_timeout(
    port: int, http_server: GuardedHTTPServer, clients: Clients
) -> None:
    http_server.conn_params.header_timeout = 0.3
    reader, writer = await silent_connection(http_server, port)
    try:
        alice, _ = await clients.join("room", "alice")  # others are served meanwhile
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not http_server._waiting
        await alice.publish("still here")
        assert (await alice.recv())["data"] == "still here"
    finally:
        writer.close()


async def test_a_client_gone_before_its_first_byte_leaves_nothing_behind(
    port: int, http_server: GuardedHTTPServer
) -> None:
    _, writer = await silent_connection(http_server, port)
    writer.close()
    await wait_for(lambda: not http_server._waiting and not http_server._order)  # a poll: no event for the forget


async def test_silent_connections_beyond_the_cap_are_evicted_oldest_first(
    port: int, http_server: GuardedHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server, "_cap", lambda: 8)
    conns = [await silent_connection(http_server, port) for _ in range(8)]
    try:
        newest = await asyncio.open_connection("127.0.0.1", port)
        conns.append(newest)
        assert await asyncio.wait_for(conns[0][0].read(), 5) == b""  # the oldest made room
        assert len(http_server._waiting) == 8
        newest[1].write(upgrade_request(port, f"/ws/room?token={make_token('alice')}"))
        assert (await asyncio.wait_for(newest[0].readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101 ")
    finally:
        for _, writer in conns:
            writer.close()


async def test_closing_the_server_closes_connections_it_waits_on(port: int, http_server: GuardedHTTPServer) -> None:
    reader, writer = await silent_connection(http_server, port)
    try:
        await http_server.close_all_connections()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("host", ["", "Host: a b\r\n", "Host: x\r\nHost: y\r\n"], ids=["none", "bad", "two"])
async def test_a_request_tornado_would_refuse_after_parsing_gets_its_400(
    port: int, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = upgrade_request(port, f"/ws/room?token={make_token('alice')}").replace(
            f"Host: 127.0.0.1:{port}\r\n".encode(), host.encode()
        )
        writer.write(head)
        assert await asyncio.wait_for(reader.read(), 5) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        writer.close()


async def test_a_failure_while_routing_closes_the_connection_and_is_logged(
    port: int, http_server: GuardedHTTPServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("router bug")

    monkeypatch.setattr(http_server, "start_request", broken)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, "/ws/room"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert any(r.getMessage() == "upgrade request failed" for r in caplog.records)
    finally:
        writer.close()


# -- handlers that do not answer in their first step --------------------------------------------------


class _Gated(tornado.web.RequestHandler):
    gate: asyncio.Event
    answered: asyncio.Event

    async def get(self) -> None:
        await self.gate.wait()
        self.write("opened")

    def on_finish(self) -> None:
        self.answered.set()


@tornado.web.stream_request_body
class _Streaming(tornado.web.RequestHandler):
    def data_received(self, chunk: bytes) -> None:
        pass

    def get(self) -> None:
        self.write("streamed")


@pytest.fixture
def gated_server(io_loop: IOLoop) -> Iterator[tuple[GuardedHTTPServer, int, asyncio.Event]]:
    _Gated.gate = gate = asyncio.Event()
    _Gated.answered = asyncio.Event()
    app = tornado.web.Application([("/gated", _Gated), ("/streaming", _Streaming)])
    server = GuardedHTTPServer(app, upgrade_prefix="/")
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    yield server, port, gate
    server.stop()
    io_loop.run_sync(server.close_all_connections)


def upgrade_connection_readers() -> list[Any]:
    """Readers on this loop that an UpgradeConnection placed (its placeholder until the handler answers)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    return [
        key
        for key in selector.get_map().values()
        if key.data[0] is not None and isinstance(getattr(key.data[0]._callback, "__self__", None), UpgradeConnection)
    ]


async def ask_the_gated_handler(
    server: GuardedHTTPServer, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upgrade request to /gated, sent after the server started waiting for it."""
    reader, writer = await silent_connection(server, port)
    writer.write(upgrade_request(port, "/gated"))
    await writer.drain()
    return reader, writer


async def test_bytes_that_arrive_before_a_slow_handler_answers_wait(
    gated_server: tuple[GuardedHTTPServer, int, asyncio.Event], caplog: pytest.LogCaptureFixture
) -> None:
    server, port, gate = gated_server
    caplog.set_level(logging.DEBUG)
    reader, writer = await ask_the_gated_handler(server, port)
    try:
        writer.write(b"early bytes")  # readable again while the handler waits
        await writer.drain()
        # A level-triggered reader that nobody empties would fire on every loop pass: the
        # placeholder stops watching instead, and the bytes wait in the socket.
        await wait_for(lambda: not server._waiting and not upgrade_connection_readers())  # a poll: no event for it
        gate.set()
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"opened"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        writer.close()


async def test_a_handler_that_streams_bodies_answers_an_upgrade_request_too(
    gated_server: tuple[GuardedHTTPServer, int, asyncio.Event],
) -> None:
    _, port, _ = gated_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, "/streaming"))
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"streamed"
    finally:
        writer.close()


async def test_a_client_that_resets_while_the_handler_waits_costs_nothing(
    gated_server: tuple[GuardedHTTPServer, int, asyncio.Event], caplog: pytest.LogCaptureFixture
) -> None:
    server, port, gate = gated_server
    caplog.set_level(logging.DEBUG)
    _, writer = await ask_the_gated_handler(server, port)
    await wait_for(lambda: not server._waiting)  # a poll: handing it to the gated handler sends nothing
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # a reset, not a FIN
    await wait_for(lambda: not upgrade_connection_readers())  # a poll: the reset is seen only by the loop
    gate.set()
    await asyncio.wait_for(_Gated.answered.wait(), 5)  # its answer went nowhere, quietly
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
