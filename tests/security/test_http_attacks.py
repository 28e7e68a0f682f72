"""E. The HTTP layer, before any WebSocket exists: slowloris, non-HTTP bytes, huge or endless bodies."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tornado_ws.server as server_module
from tests.canary import Canary
from tests.conftest import (
    QUIET_PINGS,
    SECRET,
    Clients,
    ServerProcess,
    http_get,
    make_token,
    raise_fd_limit,
    test_config,
)
from tests.rawws import close_writers, http_answer
from tornado_ws.server import Server
from tornado_ws.web.handler import SessionHandler

# TLS 1.2 ClientHello: record header, handshake header, version, 32 random bytes, no session,
# one cipher suite (TLS_RSA_WITH_AES_128_CBC_SHA), null compression, no extensions.
TLS_CLIENT_HELLO = (
    bytes.fromhex("160301002d" + "01000029" + "0303") + bytes(range(32)) + bytes.fromhex("00" + "0002002f" + "0100")
)


class Served:
    """The CLI's own ``tornado_ws.server.Server`` (its HTTPServer settings) in this process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.port = server.port
        self.clients = Clients(server.port)
        self.registry = server.registry


@pytest.fixture
def serve(io_loop: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    """``serve(header_timeout=None, **config)`` starts a Server on a free port; stopped at teardown."""
    started: list[Served] = []

    def start(header_timeout: float | None = None, **overrides: Any) -> Served:
        if header_timeout is not None:
            monkeypatch.setattr(server_module, "HEADER_TIMEOUT", header_timeout)
        server = Server(test_config(port=0, shutdown_timeout=1, **{**QUIET_PINGS, **overrides}))
        server.start()
        served = Served(server)
        started.append(served)
        return served

    gc_threshold = gc.get_threshold()
    yield start
    for served in started:
        io_loop.run_sync(served.clients.close_all)
        io_loop.run_sync(served.server.shutdown)
        io_loop.run_sync(served.server.hub.aclose)
    SessionHandler.registry = None
    # Server.start() tunes the collector for a long-lived process (gc.freeze, high thresholds);
    # undo that so the rest of the test session runs with the defaults.
    gc.unfreeze()
    gc.set_threshold(*gc_threshold)


async def test_300_half_open_connections_do_not_stop_others(serve: Callable[..., Served]) -> None:
    """Slowloris: 320 connections each send half a request line and stop; everyone else carries on."""
    served = serve()  # the CLI's HTTPServer settings, 30 s header timeout
    half_open = 320
    raise_fd_limit(4 * half_open + 256)
    canary = await Canary.open(served.clients)
    writers: list[asyncio.StreamWriter] = []
    try:
        async with canary.throughout(min_rounds=1):
            for n in range(half_open):
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(f"GET /ws/standup?token={n}".encode())  # no CRLF, ever
                writers.append(writer)
                if n % 40 == 39:
                    await writer.drain()
            started = time.monotonic()
            newcomer, welcome = await served.clients.join("standup", "newcomer")
            await newcomer.publish("made it")
            assert (await newcomer.recv())["data"] == "made it"
            assert time.monotonic() - started < 2.0
        assert welcome["participant_count"] == 1
        assert served.registry.connection_count == 3
    finally:
        close_writers(writers)


async def test_slowloris_is_cut_by_the_header_timeout(serve: Callable[..., Served]) -> None:
    """Half a request, or one byte at a time: the header timeout is a deadline for the whole head."""
    served = serve(header_timeout=0.5)
    canary = await Canary.open(served.clients)
    writers: list[asyncio.StreamWriter] = []
    try:
        async with canary.throughout(min_rounds=1):
            readers = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"GET /ws/standup HTTP/1.1\r\nHost: x\r\n")
                writers.append(writer)
                readers.append(reader)
            dribble_reader, dribbler = await asyncio.open_connection("127.0.0.1", served.port)
            writers.append(dribbler)
            started = time.monotonic()

            async def dribble() -> None:
                for byte in b"GET /ws/standup HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                    if dribble_reader.at_eof():
                        return
                    dribbler.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            dribbling = asyncio.ensure_future(dribble())
            answers = await asyncio.gather(*(http_answer(r, timeout=5) for r in [*readers, dribble_reader]))
            elapsed = time.monotonic() - started
            dribbling.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dribbling
        assert answers == [b""] * 21  # closed without a word
        assert elapsed < 3.0
    finally:
        close_writers(writers)


RAW_JUNK = {
    "tls-client-hello": TLS_CLIENT_HELLO,
    "junk-with-crlf": b"\x00\xff garbage\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "nul-bytes": b"\x00" * 4096 + b"\r\n\r\n",
    "bare-crlfs": b"\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "bad-version": b"GET /ws/standup HTTP/7.0\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET /ws/standup HTTP/1.1\r\nHost x\r\n\r\n",
    "negative-content-length": b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "conflicting-content-lengths": (
        b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
    "bad-chunked-encoding": (
        b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    "request-line-70kb": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-value-70kb": b"GET /ws/standup HTTP/1.1\r\nAuthorization: Bearer " + b"e" * 70_000 + b"\r\n\r\n",
    "10k-headers": b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
}


@pytest.mark.parametrize("attack", sorted(RAW_JUNK))
async def test_non_http_bytes_and_oversized_heads_are_refused(serve: Callable[..., Served], attack: str) -> None:
    """400 or a silent close (the head limit is 64 KiB); a TLS hello waits for the header timeout."""
    served = serve(header_timeout=0.5)
    canary = await Canary.open(served.clients)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        async with canary.throughout():
            writer.write(RAW_JUNK[attack])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            answer = await http_answer(reader, timeout=5)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]
        code, body = await asyncio.to_thread(http_get, served.port, "/healthz")
        assert (code, json.loads(body)) == (200, {"status": "ok"})
    finally:
        writer.close()


async def answer_to(served: Served, request: bytes, timeout: float) -> bytes | None:
    """Send ``request`` while the canary talks: what the server answers before it closes, or None
    when it still holds the connection ``timeout`` seconds later."""
    canary = await Canary.open(served.clients)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        async with canary.throughout():
            writer.write(request)
            await writer.drain()
            try:
                return await http_answer(reader, timeout)
            except TimeoutError:
                return None
    finally:
        writer.close()


async def test_huge_request_body_is_refused_before_it_is_buffered(serve: Callable[..., Served]) -> None:
    # A bounded server refuses at once (Content-Length too long): 413 or a close, within 1 s.
    head = (
        b"POST /api/sessions/standup/messages HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    )
    answer = await answer_to(serve(), head, timeout=1)
    assert answer is not None, "the server is waiting to buffer a 50 MB body"


async def test_body_that_never_finishes_is_cut(serve: Callable[..., Served]) -> None:
    request = b'POST /api/sessions/standup/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"data":'
    answer = await answer_to(serve(header_timeout=0.3), request, timeout=1.5)
    assert answer is not None, "the half-sent body still holds the connection 1.5 s later (timeout: 0.3 s)"


async def test_half_open_connections_at_the_fd_limit_do_not_lock_others_out(io_loop: Any) -> None:
    """The same slowloris against a process with a low fd limit (a shell default is 1024; 256 here)."""
    limit, half_open = 256, 300
    raise_fd_limit(2 * half_open + 256)
    server = ServerProcess(["--jwt-secret", SECRET], fd_limit=limit)
    clients = Clients(server.port)
    writers: list[asyncio.StreamWriter] = []
    try:
        canary = await Canary.open(clients)
        for n in range(half_open):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET /ws/standup?token={n}".encode())
            writers.append(writer)
        async with canary.throughout():
            newcomer = await asyncio.wait_for(clients.connect("standup", make_token("newcomer")), 3)
            assert (await newcomer.recv())["type"] == "welcome"
        lines = server.output().count("\n")
        assert lines < 200, f"{lines} log lines: the accept loop is spinning on EMFILE"
    finally:
        close_writers(writers)
        await clients.close_all()
        server.stop()
        server.log_path.unlink(missing_ok=True)
