"""A node that loses Redis for a while: its members see every seq in order, or are told they lost state.

Node A reaches one real redis-server through two fault proxies, one for its command pool
and one for its pub/sub connection, so a test can let the pub/sub reconnect while commands
still fail (the first resync after a reconnect then fails). Node B talks to Redis directly
and keeps publishing. Whatever happens, a member on A receives either every seq in order or
close 1012, after which a resume says ``recovered: false``: never a silent jump.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer, require_redis_server, stop_nodes
from tests.conftest import SECRET, Client, make_token
from tests.faultproxy import FaultProxy
from tornado_ws.brokers import redis_scripts
from tornado_ws.brokers.redis import RedisBroker
from tornado_ws.brokers.redis_scripts import SessionKeys
from tornado_ws.core import server_messages as messages
from tornado_ws.core.registry import Registry, SessionKey
from tornado_ws.core.stream import new_epoch
from tornado_ws.testing import HubServer, test_hub

# Losing Redis is an expected fault: warnings at most, never an ERROR or a traceback.
pytestmark = pytest.mark.usefixtures("no_errors_logged")

ROOM = SessionKey("acme", "room")
RESTARTED = (1012, "session stream restarted")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer().start()
    yield server
    server.cleanup()


class SplitCluster:
    """Node A through proxies (``commands``, ``pubsub``), node B direct; one Redis."""

    def __init__(self, redis: RedisServer, commands: FaultProxy, pubsub: FaultProxy, history_size: int) -> None:
        self.commands, self.pubsub = commands, pubsub
        self.broker_a = RedisBroker(
            f"redis://127.0.0.1:{commands.port}/0",
            Registry(history_size=0, history_ttl=0),
            history_size=history_size,
            pubsub_url=f"redis://127.0.0.1:{pubsub.port}/0",
        )
        hub_a = test_hub(jwt_secret=SECRET, broker_impl=self.broker_a, history_size=history_size)
        hub_b = test_hub(jwt_secret=SECRET, broker=redis.url, history_size=history_size)
        self.nodes = [HubServer(hub_a).start(), HubServer(hub_b).start()]
        self.sockets: list[Client] = []

    async def join(self, node: int, sub: str, **query: Any) -> tuple[Client, dict[str, Any]]:
        url = f"ws://127.0.0.1:{self.nodes[node].port}/ws/room?token={make_token(sub, 'acme')}"
        url += "".join(f"&{k}={v}" for k, v in query.items())
        client = Client(await websockets.connect(url, max_queue=None))
        self.sockets.append(client)
        welcome = await client.recv()
        assert welcome["type"] == "welcome", welcome
        return client, welcome

    def cut_a(self) -> None:
        """Node A loses Redis: every connection reset, new ones refused."""
        for proxy in (self.commands, self.pubsub):
            proxy.refusing = True
            proxy.cut()

    async def heal_pubsub_only(self) -> None:
        """Let A's pub/sub reconnect while its commands still fail: the first resync fails."""
        accepted = self.pubsub.accepted
        self.pubsub.refusing = False
        await asyncio.wait_for(self.pubsub.wait_accepted(accepted + 1), 10)
        # Cleared when the cut was noticed (before reconnecting), set on the new subscription.
        await asyncio.wait_for(self.broker_a.connected.wait(), 10)

    async def close(self) -> None:
        for client in self.sockets:
            await client.close()
        await stop_nodes(self.nodes)
        for proxy in (self.commands, self.pubsub):
            await proxy.stop()


def split_cluster(redis_server: RedisServer, io_loop: IOLoop, history_size: int) -> Iterator[SplitCluster]:
    commands = io_loop.run_sync(FaultProxy(redis_server.port).start)
    pubsub = io_loop.run_sync(FaultProxy(redis_server.port).start)
    cluster = SplitCluster(redis_server, commands, pubsub, history_size)
    yield cluster
    io_loop.run_sync(cluster.close)


@pytest.fixture
def cluster(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[SplitCluster]:
    yield from split_cluster(redis_server, io_loop, history_size=100)


@pytest.fixture
def small_history(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[SplitCluster]:
    yield from split_cluster(redis_server, io_loop, history_size=3)


async def publish(pub: Client, *data: Any) -> int:
    """Publish each item and wait until Redis sequenced it (the publisher's own copy is back)."""
    seq = 0
    for item in data:
        await pub.publish(item)
        while (frame := await pub.recv(10))["type"] != "message" or frame["data"] != item:
            pass
        seq = frame["seq"]
    return seq


async def mark(cluster: SplitCluster, member: Client, sub: str) -> list[dict[str, Any]]:
    """A user joins on B; wait for ``member`` on A to see it, returning the messages it got first.

    The ``user_joined`` travels on the session channel after everything published before it,
    so once it is here, node A has read those frames too.
    """
    await cluster.join(1, sub)
    got = []
    while (frame := await member.recv(10))["type"] != "user_joined" or frame["user_id"] != sub:
        if frame["type"] == "message":
            got.append(frame)
    return got


async def messages_until_closed(member: Client) -> tuple[list[int], tuple[int | None, str]]:
    seqs = []
    try:
        while True:
            frame = await member.recv(10)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
    except websockets.ConnectionClosed as exc:
        return seqs, ((exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, ""))


async def start(cluster: SplitCluster) -> tuple[Client, Client, str]:
    """Alice on A, pub on B, seqs 1 and 2 delivered to both."""
    alice, welcome = await cluster.join(0, "alice")
    pub, _ = await cluster.join(1, "pub")
    assert (await alice.recv_type("user_joined"))["user_id"] == "pub"
    assert await publish(pub, "one", "two") == 2
    assert [(await alice.recv_type("message"))["seq"] for _ in range(2)] == [1, 2]
    return alice, pub, welcome["epoch"]


async def test_a_failed_first_resync_still_fills_the_gap_in_order(cluster: SplitCluster) -> None:
    alice, pub, _ = await start(cluster)
    cluster.cut_a()
    assert await publish(pub, 3, 4, 5) == 5  # A's pub/sub is away: only history has them
    await cluster.heal_pubsub_only()
    assert await publish(pub, 6, 7, 8) == 8  # live again on A, while A still cannot read history
    early = await mark(cluster, alice, "marker")
    assert early == [], f"delivered over a gap: {[f['seq'] for f in early]}"
    cluster.commands.refusing = False  # the heartbeat's retry now reads 3..5 from history
    assert await publish(pub, 9) == 9
    got = [await alice.recv_type("message") for _ in range(7)]
    assert [(f["seq"], f["data"]) for f in got] == [(n, n) for n in range(3, 10)]
    await alice.assert_silent()


async def test_a_gap_the_history_no_longer_holds_closes_1012_and_resume_says_not_recovered(
    small_history: SplitCluster,
) -> None:
    alice, pub, epoch = await start(small_history)
    small_history.cut_a()
    assert await publish(pub, *range(3, 8)) == 7  # 5 frames, history keeps 3: 3 and 4 are gone
    await small_history.heal_pubsub_only()
    assert await publish(pub, 8) == 8
    assert await mark(small_history, alice, "marker") == []
    small_history.commands.refusing = False
    assert await messages_until_closed(alice) == ([], RESTARTED)
    back, welcome = await small_history.join(0, "alice", since=2, epoch=epoch)
    assert (welcome["recovered"], welcome["seq"]) == (False, 8)
    assert await publish(pub, 9) == 9
    assert (await back.recv_type("message"))["seq"] == 9


async def test_more_live_frames_than_the_history_while_unsynced_close_1012(small_history: SplitCluster) -> None:
    alice, pub, epoch = await start(small_history)
    small_history.cut_a()
    assert await publish(pub, 3) == 3
    await small_history.heal_pubsub_only()
    # Commands still fail, so the gap cannot be filled; holding more than the history is pointless.
    assert await publish(pub, *range(4, 8)) == 7
    assert await messages_until_closed(alice) == ([], RESTARTED)
    small_history.commands.refusing = False
    _, welcome = await small_history.join(0, "alice", since=2, epoch=epoch)
    assert (welcome["recovered"], welcome["seq"]) == (False, 7)


async def test_a_frame_lost_on_the_pubsub_path_is_read_from_history(cluster: SplitCluster) -> None:
    """Redis pub/sub is at most once: a frame that is in the history but never arrived live
    must still reach every member, in order, on both nodes."""
    alice, pub, _ = await start(cluster)
    keys = SessionKeys.of(ROOM)
    before, after = messages.message_frame_parts(
        session_id=ROOM.session_id, user_id="ghost", name=None, ts=time.time(), data_json='"lost"'
    )
    direct = aioredis.Redis(port=cluster.pubsub.target_port)
    try:
        # The real PUBLISH script, sent to a channel nobody listens to: sequenced and kept, never heard.
        lost = direct.register_script(redis_scripts.PUBLISH)
        void = [keys.epoch, keys.seq, keys.history, "tws:test:void", redis_scripts.org_sessions(ROOM.org_id)]
        assert await lost(keys=void, args=[new_epoch(), 100, 60, before, after, ROOM.session_id, 0]) == 3
    finally:
        await direct.aclose()
    await pub.publish("four")
    for member in (alice, pub):
        got = [await member.recv_type("message") for _ in range(2)]
        assert [(f["seq"], f["data"]) for f in got] == [(3, "lost"), (4, "four")]


async def test_a_join_while_the_listener_is_behind_loses_nothing_for_anyone(cluster: SplitCluster) -> None:
    """A newcomer's snapshot can be newer than what node A's listener has delivered (its pub/sub
    is slow): the members already on A must still get those frames, the newcomer none twice."""
    alice, pub, _ = await start(cluster)
    cluster.pubsub.stall()  # A's pub/sub connection holds what Redis sends it
    assert await publish(pub, 3, 4) == 4
    carol, welcome = await cluster.join(0, "carol")  # commands flow: its snapshot says seq 4
    assert welcome["seq"] == 4
    cluster.pubsub.resume()
    assert await publish(pub, 5) == 5
    got = [await alice.recv_type("message") for _ in range(3)]
    assert [f["seq"] for f in got] == [3, 4, 5]
    assert [f["seq"] for f in [await carol.recv_type("message")]] == [5]
    await carol.assert_silent()
    await alice.assert_silent()
