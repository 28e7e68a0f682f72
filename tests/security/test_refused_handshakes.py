"""Refused handshakes cannot exhaust descriptors.

A handshake with no or a bad token is upgraded (the 101 is sent, then close 1008): its socket
waits for the peer's close frame, which a flood never sends. Such sockets count toward
``--max-connections`` and the server's descriptor cap, give way first when a newcomer needs
the room, and are released within ``REFUSED_CLOSE_TIMEOUT`` in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import pytest

import tornado_ws.transport.websocket as connection_module
from tests.canary import Canary
from tests.conftest import SECRET, TIMEOUT, Clients, ServerProcess, make_token, raise_fd_limit, test_config
from tests.rawws import close_writers, raw_connect, read_frame, upgrade_request
from tornado_ws.config import Config


async def refused_upgrade(port: int, token: str = "not-a-jwt") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A handshake with a bad token whose close frame is read and never answered."""
    reader, writer = await raw_connect(port)
    writer.write(upgrade_request(port, f"/ws/standup?token={token}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode, payload = await read_frame(reader)
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1008)
    return reader, writer


async def hang_up(reader: asyncio.StreamReader, timeout: float) -> None:
    """Wait for the server to close the TCP connection (EOF, or a reset)."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), timeout) == b""


async def test_a_refused_socket_that_never_answers_is_released_promptly(clients: Clients, port: int, app: Any) -> None:
    lingering = app.settings["state"].lingering
    canary = await Canary.open(clients)
    async with canary.throughout():
        reader, writer = await refused_upgrade(port)
        assert len(lingering) == 1
        # Well before the 5 s a member's close handshake gets.
        await hang_up(reader, connection_module.REFUSED_CLOSE_TIMEOUT + 1.0)
    assert len(lingering) == 0
    writer.close()


class TestRefusedSocketsCountTowardMaxConnections:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_connections=4)

    async def test_they_give_way_to_a_newcomer(
        self, clients: Clients, port: int, app: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(connection_module, "REFUSED_CLOSE_TIMEOUT", 60.0)  # only eviction frees them here
        canary = await Canary.open(clients)  # two of the four
        refused = [await refused_upgrade(port) for _ in range(2)]
        assert len(app.settings["state"].lingering) == 2
        newcomer = await clients.connect("standup", make_token("newcomer"))
        assert (await newcomer.recv())["type"] == "welcome"
        await hang_up(refused[0][0], TIMEOUT)  # the oldest refused socket made the room
        assert len(app.settings["state"].lingering) == 1
        await canary.exchange()
        close_writers([writer for _, writer in refused])


async def test_a_flood_of_refused_handshakes_at_the_fd_limit_does_not_lock_others_out(io_loop: Any) -> None:
    """~300 refused handshakes that never answer, against a process allowed 256 descriptors."""
    limit, flood = 256, 300
    raise_fd_limit(2 * flood + 256)
    server = ServerProcess(["--jwt-secret", SECRET, "--ping-interval", "60"], fd_limit=limit)
    clients = Clients(server.port)
    writers: list[asyncio.StreamWriter] = []
    try:
        canary = await Canary.open(clients)
        async with canary.throughout():
            for n in range(flood):
                _, writer = await raw_connect(server.port)
                writer.write(upgrade_request(server.port, f"/ws/standup?token=bad{n}"))
                writers.append(writer)
            await asyncio.gather(*(writer.drain() for writer in writers))
            newcomer = await asyncio.wait_for(clients.connect("standup", make_token("newcomer")), 3)
            assert (await newcomer.recv())["type"] == "welcome"
        assert "Traceback" not in server.output()
    finally:
        close_writers(writers)
        await clients.close_all()
        server.stop()
        server.log_path.unlink(missing_ok=True)
