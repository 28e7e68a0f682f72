"""One contract, two brokers: MemoryBroker and RedisBroker must behave the same.

With Redis, "node a" and "node b" are two brokers (two processes' worth of state)
sharing one real redis-server; with memory both names are the one broker.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Iterator

import pytest
from tornado.ioloop import IOLoop

from tests.recording import RecordingPeer
from tests.redis_server import RedisServer, require_redis_server
from tornado_ws.broker import Broker, MemoryBroker
from tornado_ws.hub import Member, Registry, SessionKey
from tornado_ws.redis_broker import RedisBroker

ROOM = SessionKey("acme", "room")
_ids = itertools.count()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer().start()
    yield server
    server.cleanup()


def flush(server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(64).startswith(b"+OK")


@pytest.fixture(params=["memory", "redis"])
def nodes(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[tuple[Broker, Broker]]:
    if request.param == "memory":
        broker = MemoryBroker(Registry(history_size=5, history_ttl=60))
        yield broker, broker
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    flush(server)
    pair = [
        RedisBroker(server.url, Registry(history_size=0, history_ttl=0), history_size=5, history_ttl=60, node_id=name)
        for name in ("node-a", "node-b")
    ]
    for broker in pair:
        io_loop.run_sync(broker.start)
    yield pair[0], pair[1]
    for broker in pair:
        io_loop.run_sync(broker.close)


def member(user: str, key: SessionKey = ROOM, name: str | None = None) -> Member:
    return Member(key=key, connection_id=f"c{next(_ids)}", user_id=user, name=name, peer=RecordingPeer())


def peer(m: Member) -> RecordingPeer:
    assert isinstance(m.peer, RecordingPeer)
    return m.peer


def seqs(m: Member) -> list[int]:
    return [f["seq"] for f in peer(m).messages()]


async def test_welcome_first_then_others_see_user_joined(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    alice, bob = member("alice", name="Alice"), member("bob")
    await a.join(alice)
    welcome = peer(alice).frames[0]
    assert (welcome["type"], welcome["seq"], welcome["participant_count"]) == ("welcome", 0, 1)
    assert welcome["participants"] == [{"user_id": "alice", "name": "Alice"}]
    await b.join(bob)
    assert peer(bob).frames[0]["participant_count"] == 2
    await peer(alice).until(lambda p: "user_joined" in p.types())
    joined = peer(alice).frames[-1]
    assert (joined["user_id"], joined["participant_count"]) == ("bob", 2)
    assert "user_joined" not in peer(bob).types()


async def test_one_gapless_order_on_every_node(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    members = [member("u1"), member("u2"), member("u3")]
    await a.join(members[0])
    await b.join(members[1])
    await b.join(members[2])

    async def send(broker: Broker, sender: str) -> list[int]:
        return [await broker.publish(ROOM, user_id=sender, name=None, data_json=str(n)) for n in range(10)]

    results = await asyncio.gather(send(a, "u1"), send(b, "u2"), send(a, "u3"))
    assert sorted(itertools.chain(*results)) == list(range(1, 31))
    for m in members:
        await peer(m).until(lambda p: len(p.messages()) == 30)
    order = [(f["seq"], f["user_id"], f["data"]) for f in peer(members[0]).messages()]
    assert [s for s, _, _ in order] == list(range(1, 31))
    for m in members[1:]:
        assert [(f["seq"], f["user_id"], f["data"]) for f in peer(m).messages()] == order
    for sender in ("u1", "u2", "u3"):
        assert [d for _, u, d in order if u == sender] == list(range(10))


async def test_two_tabs_on_two_nodes_are_one_participant(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    bob, carol1, carol2 = member("bob"), member("carol"), member("carol")
    tab1, tab2 = member("alice", name="Alice"), member("alice", name="Alice")
    for node, m in ((a, bob), (b, carol1), (a, carol2), (a, tab1), (b, tab2)):
        await node.join(m)
    assert peer(tab2).frames[0]["participant_count"] == 3
    await peer(bob).until(lambda p: p.types().count("user_joined") == 2)
    await a.leave(tab1)
    await b.publish(ROOM, user_id="bob", name=None, data_json='"marker"')
    await peer(bob).until(lambda p: len(p.messages()) == 1)
    assert "user_left" not in peer(bob).types()
    await b.leave(tab2)
    await peer(bob).until(lambda p: "user_left" in p.types())
    assert peer(bob).frames[-1] == {
        "type": "user_left",
        "session_id": "room",
        "user_id": "alice",
        "name": "Alice",
        "participant_count": 2,  # users, not connections: carol's two tabs are one
    }
    assert (await a.presence(ROOM))["participant_count"] == 2


async def test_resume_on_another_node_replays_exactly_what_was_missed(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    alice, watcher = member("alice"), member("watcher")
    await a.join(alice)
    await b.join(watcher)
    for n in range(3):
        await a.publish(ROOM, user_id="alice", name=None, data_json=str(n))
    await peer(alice).until(lambda p: len(p.messages()) == 3)
    epoch = peer(alice).frames[0]["epoch"]
    await a.leave(alice)
    for n in range(3, 5):
        await b.publish(ROOM, user_id="watcher", name=None, data_json=str(n))
    back = member("alice")
    recovery = await b.join(back, epoch=epoch, since=3)
    assert recovery.recovered
    welcome = peer(back).frames[0]
    assert (welcome["recovered"], welcome["seq"], welcome["epoch"]) == (True, 5, epoch)
    await b.publish(ROOM, user_id="watcher", name=None, data_json="5")
    await peer(back).until(lambda p: len(p.messages()) == 3)
    assert seqs(back) == [4, 5, 6]


async def test_resume_that_cannot_be_served_says_so(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    alice = member("alice")
    await a.join(alice)
    for n in range(8):  # history keeps 5
        await a.publish(ROOM, user_id="alice", name=None, data_json=str(n))
    epoch = peer(alice).frames[0]["epoch"]
    for kwargs in ({"epoch": epoch, "since": 1}, {"epoch": "other", "since": 7}, {"epoch": epoch, "since": 99}):
        late = member("bob")
        assert not (await b.join(late, **kwargs)).recovered
        assert peer(late).frames[0]["recovered"] is False
        assert seqs(late) == []
    ok = member("carol")
    assert (await b.join(ok, epoch=epoch, since=3)).recovered
    assert seqs(ok) == [4, 5, 6, 7, 8]


async def test_kick_reaches_every_node(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    tab1, tab2, bob = member("mallory"), member("mallory"), member("bob")
    await a.join(tab1)
    await b.join(tab2)
    await a.join(bob)
    assert await b.kick(ROOM, "mallory", 4003, "kicked") == 2
    for tab in (tab1, tab2):
        await peer(tab).until(lambda p: p.closed is not None)
        assert peer(tab).closed == (4003, "kicked")
    await peer(bob).until(lambda p: "user_left" in p.types())
    assert (await b.presence(ROOM)) == {"participants": [{"user_id": "bob"}], "participant_count": 1}


async def test_orgs_never_meet(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    acme, globex = member("alice", SessionKey("acme", "standup")), member("eve", SessionKey("globex", "standup"))
    await a.join(acme)
    await b.join(globex)
    assert await a.publish(SessionKey("acme", "standup"), user_id="alice", name=None, data_json="1") == 1
    assert await b.publish(SessionKey("globex", "standup"), user_id="eve", name=None, data_json="2") == 1
    await peer(acme).until(lambda p: len(p.messages()) == 1)
    await peer(globex).until(lambda p: len(p.messages()) == 1)
    assert peer(acme).messages()[0]["data"] == 1 and peer(globex).messages()[0]["data"] == 2
    assert peer(globex).frames[0]["participants"] == [{"user_id": "eve"}]


async def test_publish_before_anyone_joins_starts_the_stream(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    assert await a.publish(ROOM, user_id="svc", name=None, data_json='"early"') == 1
    late = member("alice")
    await b.join(late)
    assert peer(late).frames[0]["seq"] == 1


async def test_leave_is_idempotent(nodes: tuple[Broker, Broker]) -> None:
    a, _ = nodes
    alice, bob = member("alice"), member("bob")
    await a.join(alice)
    await a.join(bob)
    await a.leave(bob)
    await a.leave(bob)
    await peer(alice).until(lambda p: "user_left" in p.types())
    await a.publish(ROOM, user_id="alice", name=None, data_json="1")
    await peer(alice).until(lambda p: len(p.messages()) == 1)
    assert peer(alice).types().count("user_left") == 1


async def test_leave_now_leaves_at_once_or_does_nothing(nodes: tuple[Broker, Broker]) -> None:
    a, _ = nodes
    alice, bob = member("alice"), member("bob")
    await a.join(alice)
    await a.join(bob)
    if a.leave_now(bob):  # done synchronously: alice already has user_left
        assert peer(alice).types()[-1] == "user_left"
        assert a.leave_now(bob)  # and idempotent
    else:  # this broker needs I/O: nothing happened yet
        assert "user_left" not in peer(alice).types()
        await a.leave(bob)
        await peer(alice).until(lambda p: "user_left" in p.types())
    assert [p["user_id"] for p in (await a.presence(ROOM))["participants"]] == ["alice"]


async def test_a_burst_of_concurrent_publishes_all_succeed(nodes: tuple[Broker, Broker]) -> None:
    a, _ = nodes  # more at once than redis-py's default pool (100) would allow
    seqs_got = await asyncio.gather(*(a.publish(ROOM, user_id="u", name=None, data_json=str(n)) for n in range(300)))
    assert sorted(seqs_got) == list(range(1, 301))
