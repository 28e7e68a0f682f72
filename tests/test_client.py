"""The resuming Python client against a real server, through a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from tests.canary import Canary
from tests.conftest import Clients, make_token, test_config
from tests.faultproxy import FaultProxy
from tests.hostile import HostileServer, Reply, welcome
from tornado_ws.client import Backoff, SessionClient, SessionClosed, connect
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry

FAST = Backoff(base=0.02, cap=0.2)


@pytest.fixture
def config() -> Config:
    return test_config(history_size=1000)


@pytest.fixture
def proxy(port: int, io_loop: IOLoop) -> Iterator[FaultProxy]:
    fp = io_loop.run_sync(FaultProxy(port).start)
    yield fp
    io_loop.run_sync(fp.stop)


class Opened:
    """Closes every Client a test opened."""

    def __init__(self) -> None:
        self.clients: list[SessionClient] = []

    async def connect(self, port: int, token: Any, session: str, **options: Any) -> SessionClient:
        client = await connect(f"ws://127.0.0.1:{port}", token, session, **{"backoff": FAST, **options})
        self.clients.append(client)
        return client


@pytest.fixture
def opened(io_loop: IOLoop, port: int) -> Iterator[Opened]:
    pool = Opened()
    yield pool

    async def close_all() -> None:
        for client in pool.clients:
            await client.close()

    io_loop.run_sync(close_all)


async def messages(client: SessionClient) -> AsyncIterator[dict[str, Any]]:
    async for frame in client:
        if frame["type"] == "message":
            yield frame


async def publish_paced(pub: Any, count: int) -> None:
    """Publish ``count`` messages, each after the previous one came back (so drops land mid-stream)."""
    for n in range(count):
        await pub.publish(n)
        await pub.recv_type("message")


# -- basics -------------------------------------------------------------------------------------


async def test_connect_send_receive(opened: Opened, port: int) -> None:
    client = await opened.connect(port, make_token("alice"), "room")
    assert client.welcome is not None and client.welcome["user_id"] == "alice"
    assert client.connected and client.last_seq == 0
    await client.send({"text": "hi"})
    frame = await client.recv(timeout=5)
    assert (frame["type"], frame["data"], frame["seq"]) == ("message", {"text": "hi"}, 1)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await client.__anext__()


async def test_async_token_provider_is_asked_on_every_connect(opened: Opened, port: int, registry: Registry) -> None:
    calls = 0

    async def fresh_token() -> str:
        nonlocal calls
        calls += 1
        return make_token("alice")

    client = await opened.connect(port, fresh_token, "room")
    client.drop()
    welcome = await client.recv(timeout=5)
    assert welcome["type"] == "welcome" and welcome["recovered"] is True
    assert calls == 2 and client.reconnects == 1


# -- drops and resume ----------------------------------------------------------------------------


async def test_subscriber_cut_repeatedly_mid_stream_sees_every_seq_once(
    opened: Opened, clients: Clients, proxy: FaultProxy
) -> None:
    total, cuts_at = 600, (100, 250, 400, 520)
    sub = await opened.connect(proxy.port, make_token("sub"), "feed")
    pub, _ = await clients.join("feed", "pub")

    async def consume() -> list[int]:
        seen: list[int] = []
        welcomes = 0
        async for frame in sub:
            if frame["type"] == "welcome":
                welcomes += 1  # each reconnect's welcome comes through the stream
            elif frame["type"] == "message":
                seen.append(frame["seq"])
            # The last seqs may have been queued before the last cut: wait for its reconnect too.
            if len(seen) == total and welcomes >= len(cuts_at):
                return seen
        raise AssertionError("stream ended early")

    async def publish_and_cut() -> None:
        # Cut where the stream is, not where a lagging reader of it is: the publisher cuts, each
        # time on the socket the subscriber is welcomed on since the cut before.
        for n in range(1, total + 1):
            await pub.publish(n - 1)
            await pub.recv_type("message")
            if n in cuts_at:
                await proxy.wait_accepted(cuts_at.index(n) + 1)
                await sub.wait_connected(5)
                assert proxy.cut() >= 2

    consumer = asyncio.ensure_future(consume())
    await publish_and_cut()
    seen = await asyncio.wait_for(consumer, 30)
    assert seen == list(range(1, total + 1))
    assert sub.connected and sub.reconnects == len(cuts_at)
    assert proxy.accepted == len(cuts_at) + 1


async def test_stalled_network_is_detected_and_resumed(opened: Opened, clients: Clients, proxy: FaultProxy) -> None:
    sub = await opened.connect(proxy.port, make_token("sub"), "feed", ping_interval=0.2, ping_timeout=0.2)
    pub, _ = await clients.join("feed", "pub")
    await publish_paced(pub, 10)
    accepted = proxy.accepted
    proxy.stall()
    publisher = asyncio.ensure_future(publish_paced(pub, 50))
    # The ping timeout noticed the stall once the client dials again (held by the stall till resume).
    await asyncio.wait_for(proxy.wait_accepted(accepted + 1), 10)
    proxy.resume()
    await publisher
    seqs = []
    async for frame in messages(sub):
        seqs.append(frame["seq"])
        if frame["seq"] == 60:
            break
    assert seqs == list(range(1, 61))
    assert sub.reconnects == 1


async def test_delayed_network_keeps_order(opened: Opened, clients: Clients, proxy: FaultProxy) -> None:
    proxy.delay = 0.01
    sub = await opened.connect(proxy.port, make_token("sub"), "feed")
    pub, _ = await clients.join("feed", "pub")
    for n in range(40):
        await pub.publish(n)
    got = []
    async for frame in messages(sub):
        got.append(frame["data"])
        if len(got) == 40:
            break
    assert got == list(range(40))


class TestHistoryTooShort:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(history_size=5)

    async def test_recovered_false_is_surfaced_then_live_continues(
        self, opened: Opened, clients: Clients, proxy: FaultProxy
    ) -> None:
        sub = await opened.connect(proxy.port, make_token("sub"), "feed")
        pub, _ = await clients.join("feed", "pub")
        proxy.refusing = True
        proxy.cut()
        await publish_paced(pub, 20)  # more than the 5 kept while sub is away
        proxy.refusing = False
        frame = await sub.recv(timeout=10)
        while frame["type"] != "welcome":
            frame = await sub.recv(timeout=10)
        assert frame["recovered"] is False and frame["seq"] == 20
        await pub.publish("live")
        live = await asyncio.wait_for(anext(messages(sub)), 5)
        assert (live["seq"], live["data"]) == (21, "live")


# -- when not to come back -----------------------------------------------------------------------


async def test_bad_token_raises_at_once(port: int) -> None:
    with pytest.raises(SessionClosed) as info:
        await connect(f"ws://127.0.0.1:{port}", "bad-token", "room", backoff=FAST)
    assert info.value.code == 1008


async def test_refused_on_reconnect_stops_retrying(opened: Opened, port: int) -> None:
    tokens = iter([make_token("alice"), make_token("alice", ttl=-60)])
    client = await opened.connect(port, lambda: next(tokens), "room")
    client.drop()
    with pytest.raises(SessionClosed) as info:
        async for _ in client:
            pass
    assert info.value.code == 1008 and "expired" in info.value.reason
    with pytest.raises(SessionClosed):
        await client.send("too late")


@pytest.mark.parametrize(("code", "comes_back"), [(4003, False), (4004, False), (1001, True), (4008, True)])
async def test_server_close_codes_decide_reconnects(
    opened: Opened, port: int, registry: Registry, code: int, comes_back: bool
) -> None:
    client = await opened.connect(port, make_token("alice"), "room")
    [member] = list(registry.members())
    member.peer.close(code, "test")
    if comes_back:
        welcome = await client.recv(timeout=5)
        assert welcome["type"] == "welcome" and welcome["recovered"] is True
    else:
        with pytest.raises(SessionClosed) as info:
            await client.recv(timeout=5)
        assert info.value.code == code
        assert client.reconnects == 0


async def test_gives_up_after_max_attempts() -> None:
    with pytest.raises(SessionClosed) as info:
        await connect("ws://127.0.0.1:9", "t", "room", backoff=Backoff(base=0.001, cap=0.01, max_attempts=3))
    assert info.value.code is None and "3 attempts" in info.value.reason


def test_backoff_is_equal_jitter_under_the_cap() -> None:
    backoff, rng = Backoff(base=0.1, cap=2.0), random.Random(7)
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)  # a floor: never ~0 by luck
        assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.6  # spread, not a fixed step
    assert 1.0 <= backoff.delay(10_000, rng) <= 2.0


# -- sizes and order ----------------------------------------------------------------------------


async def test_largest_frame_is_delivered_intact_and_one_byte_more_is_1009(opened: Opened, port: int) -> None:
    sender = await opened.connect(port, make_token("alice"), "big")
    reader = await opened.connect(port, make_token("bob"), "big")
    envelope = len(json.dumps({"type": "message", "data": ""}, separators=(",", ":")))
    text = "é" * ((65536 - envelope) // 2)  # two UTF-8 bytes each: the limit counts bytes
    text += "x" * (65536 - envelope - 2 * len(text))
    await sender.send(text)
    frame = await asyncio.wait_for(anext(messages(reader)), 5)
    assert frame["data"] == text
    await sender.send(text + "x")
    with pytest.raises(SessionClosed) as info:
        while True:
            await sender.recv(timeout=5)
    assert info.value.code == 1009


async def test_many_senders_many_receivers_one_order(opened: Opened, port: int) -> None:
    senders = [await opened.connect(port, make_token(f"s{i}"), "room") for i in range(5)]
    readers = [await opened.connect(port, make_token(f"r{i}"), "room") for i in range(5)]
    per_sender = 30

    async def send_all(i: int, client: SessionClient) -> None:
        for n in range(per_sender):
            await client.send([i, n])

    async def read_all(client: SessionClient) -> list[tuple[int, int, int]]:
        out = []
        async for frame in messages(client):
            out.append((frame["seq"], *frame["data"]))
            if len(out) == 5 * per_sender:
                return out
        raise AssertionError("ended early")

    readers_done = [asyncio.ensure_future(read_all(c)) for c in senders + readers]
    await asyncio.gather(*(send_all(i, c) for i, c in enumerate(senders)))
    orders = await asyncio.wait_for(asyncio.gather(*readers_done), 20)
    assert all(order == orders[0] for order in orders)
    assert [seq for seq, _, _ in orders[0]] == list(range(1, 5 * per_sender + 1))
    for i in range(5):
        assert [n for _, s, n in orders[0] if s == i] == list(range(per_sender))


@pytest.mark.parametrize(
    "url",
    ["ws://h:1", "ws://h:1/", "http://h:1", "ws://h:1/ws", "ws://h:1/ws/room", "ws://h:1/rt/ws/room"],
)
def test_connect_accepts_base_or_full_urls(url: str) -> None:
    from tornado_ws.client import base_url

    expected = "ws://h:1/rt" if "/rt" in url else "ws://h:1"
    assert base_url(url, "room") == expected
    assert base_url("https://h", "room") == "wss://h"


# -- a hostile or broken server (docs/security.md, item 10) ----------------------------------------

TOKEN = make_token("alice")


class TestHostileServer:
    """The client against tests/hostile.py while a canary session keeps talking on the real server."""

    @pytest.fixture(autouse=True)
    def no_errors_nor_token_logged(self, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
        caplog.set_level(logging.INFO)
        caplog.set_level(logging.DEBUG, logger="tornado_ws.client")  # its retry lines too
        yield
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, "errors logged: " + "; ".join(f"{r.name}: {r.getMessage()[:200]}" for r in errors)
        assert TOKEN not in caplog.text

    @pytest.fixture
    def hostile(self, io_loop: IOLoop) -> Iterator[Callable[[Callable[[int], Reply]], Awaitable[HostileServer]]]:
        started: list[HostileServer] = []

        async def start(script: Callable[[int], Reply]) -> HostileServer:
            started.append(await HostileServer(script).start())
            return started[-1]

        yield start
        for server in started:
            io_loop.run_sync(server.stop)

    async def test_welcome_then_close_at_once_backs_off_with_growing_gaps(
        self, hostile: Any, opened: Opened, clients: Clients
    ) -> None:
        server = await hostile(lambda n: Reply(frames=[welcome()], close_after=0))
        canary = await Canary.open(clients)
        async with canary.throughout(min_rounds=5):
            client = await opened.connect(server.port, TOKEN, "room", backoff=Backoff(base=0.05, cap=10))
            await asyncio.sleep(1.5)  # the window over which attempts are counted
        # Waits of [0.025, 0.05], [0.05, 0.1], [0.1, 0.2], ... leave room for 5 or 6 attempts in 1.5 s.
        gaps = server.gaps()
        assert 3 <= len(server.attempts) < 10, gaps
        floors = [0.025 * 2**k for k in range(len(gaps))]  # a busy machine only lengthens gaps
        assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), gaps
        # Still trying: each drop counts as a reconnect before its attempt is made.
        assert client.closed is None and client.reconnects - len(server.attempts) in (-1, 0)

    async def test_short_lived_connections_use_up_max_attempts(self, hostile: Any) -> None:
        server = await hostile(lambda n: Reply(frames=[welcome()], close_after=0))
        client = await connect(server.url, TOKEN, "room", backoff=Backoff(base=0.01, cap=0.05, max_attempts=3))
        with pytest.raises(SessionClosed) as info:
            async for _ in client:
                pass
        assert info.value.code is None and "gave up after 3 attempts" in info.value.reason
        assert len(server.attempts) == 3

    async def test_only_a_connection_that_stayed_up_resets_the_backoff(self, hostile: Any, opened: Opened) -> None:
        # Stable (0.3 s > stable_after), then gone at once, then stable again.
        script = [Reply(frames=[welcome()], close_after=0.3), Reply(frames=[welcome()], close_after=0)]
        server = await hostile(lambda n: script[n] if n < 2 else Reply(frames=[welcome()], close_after=None))
        backoff = Backoff(base=0.5, cap=1.0, stable_after=0.2)
        client = await opened.connect(server.port, TOKEN, "room", backoff=backoff)
        for _ in range(2):
            assert (await client.recv(timeout=5))["type"] == "welcome"
        stable_gap, failed_gap = server.gaps()
        assert stable_gap < 0.3 + 0.2  # came straight back: a wait would be >= 0.25 s more
        assert failed_gap >= 0.25  # the first retry after a short-lived connection waits base/2 at least
        assert client.connected and client.closed is None

    @pytest.mark.parametrize(
        ("frame", "why"),
        [
            ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
            ("not json", "not JSON"),
            ("1" * 5000, "not JSON"),  # over Python's 4,300-digit limit
            ("[1, 2]", "a JSON list"),
            ('"text"', "a JSON str"),
        ],
        ids=["deep", "garbage", "huge-int", "list", "string"],
    )
    async def test_a_frame_that_is_not_a_json_object_ends_the_stream_loudly(
        self, hostile: Any, opened: Opened, clients: Clients, frame: str, why: str
    ) -> None:
        message = json.dumps({"type": "message", "seq": 1, "data": "after"})
        server = await hostile(lambda n: Reply(frames=[welcome(), frame, message], close_after=None))
        canary = await Canary.open(clients)
        async with canary.throughout():
            client = await opened.connect(server.port, TOKEN, "room")
            with pytest.raises(SessionClosed) as info:
                while True:
                    await client.recv(timeout=5)
        assert info.value.code is None and info.value.reason.startswith("protocol error") and why in info.value.reason
        assert len(server.attempts) == 1  # the same server would do it again: no reconnect loop
        with pytest.raises(SessionClosed):
            await client.send("too late")

    @pytest.mark.parametrize(
        "first",
        ["[" * 100_000 + "]" * 100_000, '{"type": "message", "seq": 1}', welcome(seq="7"), welcome(epoch=None)],
        ids=["deep", "not-welcome", "seq-not-int", "no-epoch"],
    )
    async def test_a_broken_welcome_is_a_protocol_error(self, hostile: Any, first: str) -> None:
        message = json.dumps({"type": "message", "seq": 8, "data": "after"})
        server = await hostile(lambda n: Reply(frames=[first, message], close_after=None))
        with pytest.raises(SessionClosed) as info:
            client = await connect(server.url, TOKEN, "room", backoff=FAST)
            try:
                await client.recv(timeout=5)
            finally:
                await client.close()
        assert info.value.reason.startswith("protocol error"), info.value.reason
        assert len(server.attempts) == 1

    @pytest.mark.parametrize("status", [503, 429])
    async def test_overloaded_handshake_is_retried_with_backoff(
        self, hostile: Any, opened: Opened, clients: Clients, status: int
    ) -> None:
        script = [Reply(frames=[welcome()], close_after=0), Reply(status), Reply(status)]
        live = Reply(frames=[welcome(), json.dumps({"type": "message", "seq": 1, "data": "back"})], close_after=None)
        server = await hostile(lambda n: script[n] if n < len(script) else live)
        canary = await Canary.open(clients)
        async with canary.throughout():
            client = await opened.connect(server.port, TOKEN, "room", backoff=Backoff(base=0.05, cap=1))
            assert (await client.recv(timeout=5))["type"] == "welcome"
            assert (await client.recv(timeout=5))["data"] == "back"
        assert len(server.attempts) == 4 and client.connected and client.closed is None
        assert all(gap >= 0.025 for gap in server.gaps()), server.gaps()  # every retry waited

    @pytest.mark.parametrize("status", [403, 401, 404])
    async def test_refused_handshake_on_reconnect_raises_with_the_status(
        self, hostile: Any, opened: Opened, status: int
    ) -> None:
        server = await hostile(lambda n: Reply(frames=[welcome()], close_after=0) if n == 0 else Reply(status))
        client = await opened.connect(server.port, TOKEN, "room")
        with pytest.raises(SessionClosed) as info:
            async for _ in client:
                pass
        assert (info.value.code, info.value.status) == (None, status) and f"HTTP {status}" in info.value.reason
        assert len(server.attempts) == 2  # retrying cannot fix a refusal

    async def test_refused_first_handshake_raises_from_connect(self, hostile: Any) -> None:
        server = await hostile(lambda n: Reply(403))
        with pytest.raises(SessionClosed) as info:
            await connect(server.url, TOKEN, "room", backoff=FAST)
        assert info.value.status == 403 and len(server.attempts) == 1
