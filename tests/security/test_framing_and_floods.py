"""D. WebSocket framing and floods on raw sockets: oversized, stalled and broken frames, ping and frame floods."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from tests.canary import Canary, attacker_and_witness
from tests.conftest import QUIET_PINGS, Clients, make_token, test_config
from tests.rawws import PROTOCOL_VIOLATIONS, close_writers, cut_how, raw_upgrade, read_frame, text_frame, ws_frame
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry
from tornado_ws.web.connection import Connection

DEEP = 100_000


class TestOversizedFrames:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_message_size=1024, **QUIET_PINGS)

    @pytest.mark.parametrize(
        "raw",
        [
            "x" * 1025,
            '{"type":"message","data":' + "[" * DEEP + "]" * DEEP + "}",
            b"\x00" * 5000,
        ],
        ids=["text-over-limit", "100k-deep-over-limit", "binary-over-limit"],
    )
    async def test_frame_over_max_message_size_closes_1009(self, clients: Clients, raw: str | bytes) -> None:
        canary = await Canary.open(clients)
        mallory, bob = await attacker_and_witness(clients)
        async with canary.throughout():
            await mallory.send(raw)
            assert (await mallory.closed_with())[0] == 1009
            assert (await bob.recv())["type"] == "user_left"

    async def test_fragmented_message_that_never_ends_closes_1009(self, clients: Clients) -> None:
        """FIN=0 then continuation frames forever: Tornado counts the fragments' total against the limit."""
        canary = await Canary.open(clients)
        mallory, bob = await attacker_and_witness(clients)
        fragments_sent = 0

        async def endless() -> AsyncIterator[str]:
            nonlocal fragments_sent
            yield '{"type":"message","data":"'
            for _ in range(10_000):  # bounded: 10 MB if nothing stopped it
                fragments_sent += 1
                yield "x" * 1000
                # Paced so the close frame is read before the next write meets the closed socket
                # (which would turn into a reset and hide the close code from the client).
                await asyncio.sleep(0.02)

        async with canary.throughout():
            with pytest.raises(websockets.ConnectionClosed) as info:
                await mallory.ws.send(endless())
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            assert (await bob.recv())["type"] == "user_left"
        assert fragments_sent <= 3  # cut by the fragment that took the total past 1024 bytes


class TestStalledFrames:
    """Frames that stop half-way, from a peer that stops answering pings: the ping timeout drops them
    (at once, without a close handshake a dead peer would not answer)."""

    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0.3, ping_timeout=0.3, max_message_size=4096)

    async def test_half_sent_frames_are_cut_by_the_ping_timeout(
        self, clients: Clients, port: int, registry: Registry
    ) -> None:
        canary = await Canary.open(clients)
        bob, _ = await clients.join("standup", "bob")
        stalls = {
            "fragment-never-finished": ws_frame(0x1, b'{"type":"message","data":"', fin=False)
            + ws_frame(0x0, b"x" * 100, fin=False),
            "header-only": b"\x81",
            "length-but-no-payload": ws_frame(0x1, b"", length=1000)[:8],
            "payload-cut-short": ws_frame(0x1, b"y" * 500)[:100],
        }
        writers = []
        try:
            readers = {}
            for name, data in stalls.items():
                reader, writer, _ = await raw_upgrade(port, "standup", make_token(f"stall-{name}"))
                assert (await bob.recv())["type"] == "user_joined"
                writer.write(data)
                writers.append(writer)
                readers[name] = reader
            started = time.monotonic()
            async with canary.throughout(min_rounds=1):
                # Nobody answers the pings: each connection is dropped after interval + timeout ...
                results = await asyncio.gather(*(cut_how(r, timeout=10) for r in readers.values()))
                elapsed = time.monotonic() - started
                # ... and leaves its session at once.
                left = {(await bob.recv_type("user_left", timeout=5))["user_id"] for _ in stalls}
            assert results == ["eof"] * len(stalls)
            assert elapsed < 0.3 + 0.3 + 1.5  # interval + timeout + the sweeper's period and slack
            assert left == {f"stall-{name}" for name in stalls}
            assert registry.connection_count == 3  # the canary pair and bob
        finally:
            close_writers(writers)


class TestStalledFragmentWithPongs:
    """A client that stalls mid-message but keeps answering pings is held until its token expires (4001).

    What it holds meanwhile is bounded by --max-message-size (the fragments buffered so far).
    """

    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0.2, ping_timeout=0.2, max_message_size=4096)

    async def test_stalled_fragment_is_cut_when_the_token_expires(self, clients: Clients) -> None:
        canary = await Canary.open(clients)
        mallory = await clients.connect("standup", make_token("mallory", ttl=2))
        assert (await mallory.recv())["type"] == "welcome"
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[str]:
            yield '{"type":"message","data":"'
            yield "x" * 1000
            await never.wait()  # the websockets client keeps answering pings meanwhile
            yield '"}'

        sending = asyncio.ensure_future(mallory.ws.send(stalled()))
        async with canary.throughout(min_rounds=1):
            code, reason = await mallory.closed_with(timeout=5)
        assert (code, reason) == (4001, "token expired")
        never.set()
        with pytest.raises(websockets.ConnectionClosed):
            await sending


# -- protocol violations on a raw socket: cut at once --------------------------------------------


@pytest.mark.parametrize("attack", sorted(PROTOCOL_VIOLATIONS))
async def test_protocol_violations_cut_the_connection(
    clients: Clients, port: int, registry: Registry, attack: str
) -> None:
    canary = await Canary.open(clients)
    bob, _ = await clients.join("standup", "bob")
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
    try:
        assert (await bob.recv())["type"] == "user_joined"
        frame, code = PROTOCOL_VIOLATIONS[attack]
        async with canary.throughout():
            writer.write(frame)
            assert await cut_how(reader) == f"close {code}"
            assert await reader.read() == b""  # then the server hangs up
            left = await bob.recv()
            assert (left["type"], left["user_id"]) == ("user_left", "mallory")
        await bob.assert_silent()
        assert registry.user_connections("acme", "mallory") == 0
    finally:
        writer.close()


# -- floods ------------------------------------------------------------------------------------------


async def test_ping_flood_is_answered_coalesced_and_starves_no_one(
    clients: Clients, port: int, registry: Registry
) -> None:
    """30 000 WebSocket PINGs (3.9 MB) while not reading: once the socket backs up, the server keeps
    at most one pong pending (answering only the latest ping), so its backlog stays tiny.

    Control frames are not counted by --rate-limit (docs/security.md O1); what bounds a flood is TCP
    back-pressure and the per-frame cost, and each connection reads at most 64 KiB per loop pass.
    """
    canary = await Canary.open(clients)
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"), rcvbuf=4096)
    (participant,) = [m.peer for m in registry.members() if m.user_id == "mallory"]
    assert isinstance(participant, Connection)
    pings, chunk = 30_000, 1_000
    ping = ws_frame(0x9, b"p" * 125)
    backlog = 0
    try:
        async with canary.throughout(min_rounds=1):
            started = time.monotonic()
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            for _ in range(pings // chunk):
                writer.write(ping * chunk)
                await writer.drain()
                backlog = max(backlog, participant.pending_bytes)
            writer.write(text_frame({"type": "ping"}))  # the application pong comes after every PING was read
            writer.transport.resume_reading()  # type: ignore[attr-defined]
            pongs = 0
            while (frame := await read_frame(reader, timeout=30))[0] == 0xA:
                pongs += 1
            elapsed = time.monotonic() - started
            assert frame == (0x1, b'{"type":"pong"}')
        assert backlog < 64 * 1024
        assert 1 <= pongs < pings  # coalesced
        assert registry.user_connections("acme", "mallory") == 1  # not cut: pings are legal
        print(
            f"\nping flood: {pings} pings in {elapsed:.2f}s, {pongs} pongs, max backlog {backlog} B, "
            f"canary worst {canary.worst * 1000:.0f} ms"
        )
    finally:
        writer.close()


class TestControlFrameFloodWithRateLimit:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(rate_limit=20, rate_burst=40)

    @pytest.mark.parametrize("opcode", [0x9, 0xA])
    async def test_ping_or_pong_flood_is_cut_1008(self, clients: Clients, port: int, opcode: int) -> None:
        """With --rate-limit on, control frames get ten times the message budget; beyond it: 1008."""
        canary = await Canary.open(clients)
        reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
        try:
            async with canary.throughout():
                writer.write(ws_frame(opcode, b"x") * 2_000)
                await writer.drain()
                while (frame := await read_frame(reader, timeout=10))[0] != 0x8:
                    pass
                code = int.from_bytes(frame[1][:2], "big")
                assert (code, frame[1][2:]) == (1008, b"ping flood")
        finally:
            writer.close()


async def test_unsolicited_pong_flood_is_ignored(clients: Clients, port: int) -> None:
    canary = await Canary.open(clients)
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
    try:
        async with canary.throughout():
            writer.write(ws_frame(0xA, b"x" * 125) * 20_000)
            await writer.drain()
            writer.write(text_frame({"type": "ping"}))
            assert await read_frame(reader, timeout=30) == (0x1, b'{"type":"pong"}')
    finally:
        writer.close()


class TestFloodsAgainstLimits:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(rate_limit=20, rate_burst=40, max_outbound_buffer=16 * 1024, **QUIET_PINGS)

    async def test_frame_flood_without_reading_is_rate_limited_then_cut_4008(
        self, clients: Clients, port: int, registry: Registry, app: Any
    ) -> None:
        """Every dropped frame costs the attacker an error frame; never reading them makes it a slow consumer."""
        canary = await Canary.open(clients)
        bob, _ = await clients.join("standup", "bob")
        _, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"), rcvbuf=4096)
        assert (await bob.recv())["type"] == "user_joined"
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        burst = text_frame({"type": "ping"}) * 1000
        try:
            async with canary.throughout(min_rounds=1):
                for _ in range(200):  # at most 200 000 frames
                    if registry.user_connections("acme", "mallory") == 0:
                        break
                    writer.write(burst)
                    with contextlib.suppress(ConnectionError):
                        await asyncio.wait_for(writer.drain(), 1)
                left = await bob.recv_type("user_left", timeout=10)
            assert left["user_id"] == "mallory"
            state = app.settings["state"]
            assert state.metrics.slow_consumers == 1
            assert state.metrics.rate_limited > 0
        finally:
            writer.close()
