"""One contract, two brokers: MemoryBroker and RedisBroker must behave the same.

With Redis, "node a" and "node b" are two brokers (two processes' worth of state)
sharing one real redis-server; with memory both names are the one broker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import GARBAGE, RedisServer
from tests.recording import RecordingPeer
from tornado_ws.brokers.base import Broker, JoinRefused, Published, SessionLimit
from tornado_ws.brokers.memory import MemoryBroker
from tornado_ws.brokers.redis import RedisBroker
from tornado_ws.brokers.redis_scripts import SessionKeys, node_alive, node_sessions, user_connections
from tornado_ws.core.registry import Membership, Registry, SessionKey

ROOM = SessionKey("acme", "room")
_ids = itertools.count()


NodeFactory = Callable[..., Awaitable[tuple[Broker, Broker]]]


@pytest.fixture(params=["memory", "redis"])
def make_nodes(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[NodeFactory]:
    """``await make_nodes(**caps)``: two nodes whose registries have those caps (memory: one broker)."""
    started: list[Broker] = []

    async def make(idempotency_window: float | None = None, **caps: int) -> tuple[Broker, Broker]:
        if request.param == "memory":
            broker = MemoryBroker(
                Registry(history_size=5, history_ttl=60, idempotency_window=idempotency_window, **caps)
            )
            return broker, broker
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        pair = [
            RedisBroker(
                server.url,
                Registry(history_size=0, history_ttl=0, **caps),
                history_size=5,
                history_ttl=60,
                idempotency_window=idempotency_window,
                node_id=name,
            )
            for name in ("node-a", "node-b")
        ]
        for broker in pair:
            started.append(broker)
            await broker.start()
        return pair[0], pair[1]

    yield make
    for broker in started:
        io_loop.run_sync(broker.close)


@pytest.fixture
def nodes(make_nodes: NodeFactory, io_loop: IOLoop) -> tuple[Broker, Broker]:
    return io_loop.run_sync(make_nodes)


def member(user: str, key: SessionKey = ROOM, name: str | None = None) -> Membership:
    return Membership(key=key, connection_id=f"c{next(_ids)}", user_id=user, name=name, peer=RecordingPeer())


def peer(m: Membership) -> RecordingPeer:
    assert isinstance(m.peer, RecordingPeer)
    return m.peer


def seqs(m: Membership) -> list[int]:
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


# -- admission: bans and caps hold on every node -------------------------------------------------

LONE_SURROGATE = "\ud83d"


async def refused(broker: Broker, m: Membership) -> JoinRefused:
    with pytest.raises(JoinRefused) as info:
        await broker.join(m)
    assert peer(m).frames == [] and peer(m).closed is None  # the handler closes; the broker sent nothing
    return info.value


async def join_when_allowed(broker: Broker, make: Callable[[], Membership], timeout: float = 5.0) -> Membership:
    """Join once the refusal has run out (a bounded poll on real joins: a ban ends in Redis's time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        m = make()
        try:
            await broker.join(m)
            return m
        except JoinRefused:
            assert loop.time() < deadline, "still refused"
            await asyncio.sleep(0.05)


async def test_a_member_no_frame_can_carry_changes_nothing(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    alice = member("alice", name="Alice")
    await a.join(alice)
    for bad in (member("mallory", name=LONE_SURROGATE), member("alice", name=LONE_SURROGATE)):
        with pytest.raises(UnicodeEncodeError):
            await b.join(bad)
    assert b.registry.connection_count == (1 if a is b else 0)
    assert (await b.presence(ROOM))["participants"] == [{"user_id": "alice", "name": "Alice"}]
    bob = member("bob")
    await b.join(bob)  # the session is not stuck
    assert peer(bob).frames[0]["participant_count"] == 2
    await peer(alice).until(lambda p: "user_joined" in p.types())
    await b.leave(bob)
    await peer(alice).until(lambda p: "user_left" in p.types())
    assert [f.get("user_id") for f in peer(alice).frames[1:]] == ["bob", "bob"]


async def test_a_kick_with_a_ban_refuses_rejoins_on_every_node_until_it_ends(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    mallory, bob = member("mallory"), member("bob")
    await a.join(mallory)
    await a.join(bob)
    assert await b.kick(ROOM, "mallory", 4003, "kicked", ban_seconds=1) == 1
    await peer(mallory).until(lambda p: p.closed is not None)
    for node in (a, b):
        refusal = await refused(node, member("mallory"))
        assert (refusal.code, refusal.reason, refusal.label) == (4003, "banned", "banned")
    await b.join(member("carol"))  # nobody else is banned
    await b.join(member("mallory", SessionKey("acme", "other")))  # nor is mallory anywhere else
    assert {p["user_id"] for p in (await a.presence(ROOM))["participants"]} == {"bob", "carol"}
    back = await join_when_allowed(b, lambda: member("mallory"))
    assert peer(back).frames[0]["type"] == "welcome"


async def test_a_kick_without_a_ban_lets_the_user_straight_back(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    mallory = member("mallory")
    await a.join(mallory)
    assert await a.kick(ROOM, "mallory", 4003, "kicked") == 1
    back = member("mallory")
    await b.join(back)
    assert peer(back).frames[0]["participant_count"] == 1


async def test_a_users_connections_are_capped_across_nodes(make_nodes: NodeFactory) -> None:
    a, b = await make_nodes(max_connections_per_user=2)
    tab1, tab2 = member("alice", SessionKey("acme", "s1")), member("alice", SessionKey("acme", "s2"))
    await a.join(tab1)
    await b.join(tab2)
    for node in (a, b):
        refusal = await refused(node, member("alice", SessionKey("acme", "s3")))
        assert (refusal.code, refusal.reason, refusal.label) == (
            1013,
            "too many connections for this user",
            "per_user_limit",
        )
    await a.join(member("bob", SessionKey("acme", "s3")))  # other users are unaffected
    await b.join(member("alice", SessionKey("globex", "s3")))  # so is the same user id in another org
    await b.leave(tab2)
    await a.join(member("alice", SessionKey("acme", "s3")))  # a leave frees its place


async def test_an_orgs_sessions_are_capped_across_nodes(make_nodes: NodeFactory) -> None:
    a, b = await make_nodes(max_sessions_per_org=3)
    for n, node in enumerate((a, b, a)):
        await node.join(member(f"u{n}", SessionKey("acme", f"s{n}")))
    new = SessionKey("acme", "s3")
    for node in (a, b):
        refusal = await refused(node, member("v", new))
        assert isinstance(refusal, SessionLimit)
        assert (refusal.code, refusal.reason) == (1013, "too many sessions in this organization")
        with pytest.raises(SessionLimit):  # a publish to a new session would start a stream too
            await node.publish(new, user_id="svc", name=None, data_json="1")
    existing = SessionKey("acme", "s0")
    await b.join(member("v", existing))  # existing sessions still take members...
    assert await b.publish(existing, user_id="svc", name=None, data_json="1") == 1  # ... and messages
    await a.join(member("eve", SessionKey("globex", "s3")))  # other orgs are unaffected
    assert await b.publish(SessionKey("globex", "s4"), user_id="svc", name=None, data_json="1") == 1


async def test_an_orgs_connections_are_capped_per_process(make_nodes: NodeFactory) -> None:
    a, b = await make_nodes(max_connections_per_org=2)
    await a.join(member("u1"))
    await a.join(member("u2", SessionKey("acme", "other")))
    refusal = await refused(a, member("u3"))
    assert (refusal.code, refusal.reason, refusal.label) == (
        1013,
        "too many connections for this organization",
        "per_org_limit",
    )
    await a.join(member("eve", SessionKey("globex", "room")))  # other orgs are unaffected
    assert a.registry.org_connections("acme") == 2
    if b is not a:  # another process counts its own
        await b.join(member("u3"))


# -- Redis only: what another writer (or an old bug) left in the presence hash ---------------------


@pytest.fixture
def redis_nodes(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[tuple[RedisBroker, RedisBroker]]:
    redis_server.flush()
    pair = [
        RedisBroker(redis_server.url, Registry(history_size=0, history_ttl=0), history_size=5, node_id=name)
        for name in ("node-a", "node-b")
    ]
    for broker in pair:
        io_loop.run_sync(broker.start)
    yield pair[0], pair[1]
    for broker in pair:
        io_loop.run_sync(broker.close)


async def test_undecodable_presence_entries_never_block_a_session(
    redis_nodes: tuple[RedisBroker, RedisBroker], redis_server: RedisServer
) -> None:
    a, b = redis_nodes
    raw = aioredis.Redis.from_url(redis_server.url)
    presence = SessionKeys.of(ROOM).presence
    try:
        await raw.hset(presence, mapping=GARBAGE)
        alice, bob = member("alice", name="Alice"), member("bob")
        await a.join(alice)
        await b.join(bob)
        assert peer(alice).frames[0]["participants"] == [{"user_id": "alice", "name": "Alice"}]
        assert peer(bob).frames[0]["participant_count"] == 2
        await peer(alice).until(lambda p: "user_joined" in p.types())
        assert sorted(await raw.hkeys(presence)) == sorted([alice.connection_id.encode(), bob.connection_id.encode()])
        await raw.hset(presence, mapping=GARBAGE)  # again: leave, presence, kick and reap meet it too
        for node in (a, b):
            assert (await node.presence(ROOM))["participant_count"] == 2
        await b.leave(bob)
        await peer(alice).until(lambda p: "user_left" in p.types())
        assert peer(alice).frames[-1]["participant_count"] == 1
        assert await b.kick(ROOM, "nobody", 4003, "kicked") == 0

        # A dead node's member among the garbage: any live node reaps it and says so once.
        ghost = {"n": "node-dead", "u": "ghost"}
        await raw.sadd("tws:nodes", "node-dead")
        await raw.sadd(node_sessions("node-dead"), json.dumps(list(ROOM)))
        await raw.hset(presence, "c-ghost", json.dumps(ghost))
        await raw.hset(user_connections("acme", "ghost"), "c-ghost", "node-dead")
        assert not await raw.exists(node_alive("node-dead"))
        await peer(alice).until(lambda p: p.frames[-1].get("user_id") == "ghost", timeout=5)
        assert peer(alice).frames[-1] == {
            "type": "user_left",
            "session_id": "room",
            "user_id": "ghost",
            "participant_count": 1,
        }
        assert await raw.hkeys(presence) == [alice.connection_id.encode()]  # reaping removed the garbage
        assert not await raw.exists(user_connections("acme", "ghost"))
        carol = member("carol")
        await b.join(carol)
        assert peer(carol).frames[0]["participant_count"] == 2
    finally:
        await raw.aclose()


# -- message ids: published once per (org, session, user, id) within the window --------------------


async def test_a_message_id_is_published_once_per_org_session_and_user(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    watcher = member("watcher")
    await b.join(watcher)
    first = await a.publish_once(ROOM, user_id="alice", name=None, data_json='"hi"', message_id="m-1")
    assert first == Published(1, False)
    await peer(watcher).until(lambda p: len(p.messages()) == 1)
    assert (peer(watcher).messages()[0]["id"], peer(watcher).messages()[0]["data"]) == ("m-1", "hi")
    # The same (user, id) on either node: the original seq, nothing sent.
    for node in (b, a):
        again = await node.publish_once(ROOM, user_id="alice", name=None, data_json='"hi"', message_id="m-1")
        assert again == Published(1, True)
    # Another user, session or org with the same id is another message.
    assert await b.publish_once(ROOM, user_id="bob", name=None, data_json='"b"', message_id="m-1") == Published(
        2, False
    )
    other_session, other_org = SessionKey("acme", "room2"), SessionKey("globex", "room")
    for key in (other_session, other_org):
        assert await a.publish_once(key, user_id="alice", name=None, data_json="1", message_id="m-1") == Published(
            1, False
        )
    await peer(watcher).until(lambda p: len(p.messages()) == 2)
    await a.publish(ROOM, user_id="alice", name=None, data_json='"marker"')
    await peer(watcher).until(lambda p: len(p.messages()) == 3)
    assert [(f["seq"], f["user_id"], f.get("id")) for f in peer(watcher).messages()] == [
        (1, "alice", "m-1"),
        (2, "bob", "m-1"),
        (3, "alice", None),  # published without an id: the frame has none
    ]


async def test_the_same_id_sent_to_two_nodes_at_once_is_published_once(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    results = await asyncio.gather(
        *(
            node.publish_once(ROOM, user_id="alice", name=None, data_json=str(n), message_id="race")
            for n, node in enumerate((a, b, a, b))
        )
    )
    assert sorted(results) == [Published(1, False), Published(1, True), Published(1, True), Published(1, True)]


async def test_a_message_id_is_forgotten_after_the_window(make_nodes: NodeFactory) -> None:
    a, b = await make_nodes(idempotency_window=0.2)
    assert await a.publish_once(ROOM, user_id="alice", name=None, data_json="1", message_id="m") == Published(1, False)
    assert await b.publish_once(ROOM, user_id="alice", name=None, data_json="1", message_id="m") == Published(1, True)
    await asyncio.sleep(0.3)  # the window is the subject: real time must pass it
    assert await b.publish_once(ROOM, user_id="alice", name=None, data_json="1", message_id="m") == Published(2, False)
    # 0 turns detection off: every publish is new.
    c, d = await make_nodes(idempotency_window=0)
    key = SessionKey("acme", "off")
    for expected, node in enumerate((c, d), 1):
        assert await node.publish_once(key, user_id="alice", name=None, data_json="1", message_id="m") == Published(
            expected, False
        )
