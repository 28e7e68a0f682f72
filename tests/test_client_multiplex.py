"""The multiplexed Python client (``tornado_ws.client.Client`` over ``GET /ws``) against real servers.

Memory broker through the suite's server (tests/conftest.py), Redis with two in-process nodes, and
tests/faultproxy.py between the client and the server where a test cuts or holds the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer, stop_nodes
from tests.conftest import SECRET, Clients, make_token, test_config, wait_for
from tests.faultproxy import FaultProxy
from tests.hostile import HostileServer, Reply, welcome
from tornado_ws.client import Backoff, Client, PublishError, SessionClosed, Subscription
from tornado_ws.client.subscription import MESSAGE_ID
from tornado_ws.config import Config
from tornado_ws.testing import HubServer, test_hub

pytestmark = pytest.mark.usefixtures("no_errors_logged")

FAST = Backoff(base=0.02, cap=0.2)
SERVICE = make_token("billing", roles=["service"])


@pytest.fixture
def config() -> Config:
    return test_config(history_size=1000)


@pytest.fixture
def proxy(port: int, io_loop: IOLoop) -> Iterator[FaultProxy]:
    fp = io_loop.run_sync(FaultProxy(port).start)
    yield fp
    io_loop.run_sync(fp.stop)


@pytest.fixture
def made(io_loop: IOLoop) -> Iterator[Callable[..., Client]]:
    """``made(port, token, **options)``: a Client (FAST backoff), closed at teardown."""
    clients: list[Client] = []

    def make(port: int, token: Any, **options: Any) -> Client:
        clients.append(Client(f"ws://127.0.0.1:{port}", token, **{"backoff": FAST, **options}))
        return clients[-1]

    yield make

    async def close_all() -> None:
        for client in clients:
            await client.close()

    io_loop.run_sync(close_all)


async def next_of(stream: Subscription, kind: str, timeout: float = 5) -> dict[str, Any]:
    """The stream's next frame of type ``kind``, skipping others."""
    while True:
        frame = await stream.recv(timeout)
        if frame["type"] == kind:
            return frame


async def messages(stream: Subscription) -> AsyncIterator[dict[str, Any]]:
    async for frame in stream:
        if frame["type"] == "message":
            yield frame


# -- one connection, many sessions ---------------------------------------------------------------


async def test_two_sessions_over_one_connection_each_its_own_stream(
    made: Callable[..., Client], port: int, clients: Clients
) -> None:
    client = made(port, make_token("alice"))
    async with client:
        assert client.connected is not None
        assert (client.connected.user_id, client.connected.org_id) == ("alice", "acme")
        standup, feed = await client.join("standup"), await client.join("feed")
        assert standup.welcome is not None and feed.welcome is not None
        assert standup.welcome["session_id"] == "standup" and feed.welcome["session_id"] == "feed"
        assert standup.welcome["connection_id"] == feed.welcome["connection_id"] == client.connected.connection_id
        bob, _ = await clients.join("standup", "bob")  # the single-session endpoint, same session
        assert (await next_of(standup, "user_joined"))["user_id"] == "bob"
        assert await standup.publish({"text": "hi"}) == 1
        assert await feed.publish("news") == 1
        assert await standup.publish({"text": "again"}) == 2
        copy = await bob.recv_type("message")
        assert (copy["seq"], copy["data"], copy["user_id"]) == (1, {"text": "hi"}, "alice")
        assert MESSAGE_ID.fullmatch(copy["id"])
        own = [await next_of(standup, "message") for _ in range(2)]
        assert [(f["seq"], f["data"]) for f in own] == [(1, {"text": "hi"}), (2, {"text": "again"})]
        assert own[0]["id"] == copy["id"] != own[1]["id"]
        frames = [await feed.recv(5) for _ in range(2)]  # nothing of standup, not even bob's join
        assert [(f["type"], f["session_id"], f["seq"]) for f in frames] == [
            ("welcome", "feed", 0),
            ("message", "feed", 1),
        ]
        assert (await bob.recv_type("message"))["seq"] == 2  # bob is not in feed: nothing of it reached him
        await bob.assert_silent()
        with pytest.raises(ValueError, match="already joined"):
            client.join("feed")


async def test_leave_ends_one_stream_and_the_others_see_user_left(
    made: Callable[..., Client], port: int, clients: Clients
) -> None:
    client = made(port, make_token("alice"))
    room, other = await client.join("room"), await client.join("other")
    bob, _ = await clients.join("room", "bob")
    await room.leave()
    left = await next_of(room, "left")
    assert (left["session_id"], left["code"]) == ("room", 1000)
    with pytest.raises(StopAsyncIteration):
        await room.recv(5)
    assert (await bob.recv_type("user_left"))["user_id"] == "alice"
    with pytest.raises(SessionClosed):
        await room.publish("too late")
    assert await other.publish("still here") == 1  # the connection and its other session go on
    again = await client.join("room")  # a left session may be joined again
    assert (await again).welcome is not None and await again.publish("back") == 1
    assert (await bob.recv_type("user_joined"))["user_id"] == "alice"


async def test_a_kick_ends_that_stream_loudly_and_leaves_the_others_alone(
    made: Callable[..., Client], port: int, app: tornado.web.Application
) -> None:
    client = made(port, make_token("alice"))
    room, other = await client.join("room"), await client.join("other")
    assert await app.settings["hub"].kick("acme", "room", "alice") == 1
    left = await next_of(room, "left")
    assert left["code"] == 4003
    with pytest.raises(SessionClosed) as info:
        await room.recv(5)
    assert (info.value.code, info.value.session) == (4003, "room")
    assert await other.publish("unaffected") == 1 and client.reconnects == 0


@pytest.mark.parametrize(
    ("session", "claims", "code"),
    [("secret", {"sessions": ["public-*"]}, 4004), ("x" * 200, {}, 1008)],
    ids=["forbidden", "invalid-id"],
)
async def test_a_refused_join_raises_from_await(
    made: Callable[..., Client], port: int, session: str, claims: dict[str, Any], code: int
) -> None:
    client = made(port, make_token("alice", **claims))
    with pytest.raises(SessionClosed) as info:
        await client.join(session)
    assert (info.value.code, info.value.session) == (code, session)
    allowed = await client.join("public-1")
    assert await allowed.publish("fine") == 1  # one refusal ends one membership, not the socket


class TestTooManySessions:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_sessions_per_connection=1)

    async def test_left_1013_rejoins_after_backoff(self, made: Callable[..., Client], port: int) -> None:
        client = made(port, make_token("alice"))
        first = await client.join("one")
        second = client.join("two")
        left = await next_of(second, "left")
        assert (left["session_id"], left["code"]) == ("two", 1013)
        await first.leave()  # a place frees up: the next rejoin of "two" gets in
        assert (await second.joined(timeout=5)).welcome is not None
        assert await second.publish("in") == 1

    async def test_max_attempts_ends_a_session_refused_again_and_again(
        self, made: Callable[..., Client], port: int
    ) -> None:
        client = made(port, make_token("alice"), backoff=Backoff(base=0.01, cap=0.02, max_attempts=3))
        first = await client.join("one")
        with pytest.raises(SessionClosed) as info:
            await client.join("two")
        assert info.value.code is None and info.value.reason.startswith("gave up after 3 attempts: left (1013)")
        assert await first.publish("unaffected") == 1


class TestJoinBudget:
    @pytest.fixture
    def config(self) -> Config:
        # Joins and leaves: a burst of max(10 * 1, 2 * 5) = 10 frames, refilled at 2 a second.
        return test_config(rate_limit=0.2, rate_burst=1, max_sessions_per_connection=5)

    async def test_a_dropped_join_and_a_dropped_leave_are_sent_again(
        self, made: Callable[..., Client], port: int
    ) -> None:
        client = made(port, make_token("alice"), backoff=Backoff(base=0.1, cap=0.4))
        for _ in range(5):  # ten frames: the whole burst
            await (await client.join("room")).leave()
        late = client.join("room")
        error = await next_of(late, "error")
        assert (error["code"], error["session_id"]) == ("rate_limited", "room")
        assert (await late.joined(timeout=5)).welcomes == 1  # sent again once the budget refilled
        await late.leave(timeout=5)  # the join took the one token refilled: dropped, then sent again
        frames = [(f["type"], f.get("code")) async for f in late]
        kinds = [kind for kind, _ in itertools.groupby(frames)]
        # Each retry before the refill is dropped again: repeats collapse.
        assert kinds[-3:] == [("welcome", None), ("error", "rate_limited"), ("left", 1000)]


# -- acknowledged publish -----------------------------------------------------------------------


async def test_an_unacked_message_is_resent_with_its_id_and_acked_with_the_original_seq(
    made: Callable[..., Client], proxy: FaultProxy, clients: Clients
) -> None:
    client = made(proxy.port, make_token("alice"))
    room = await client.join("room")
    reader, _ = await clients.join("room", "bob")
    proxy.hold_replies()  # the server gets the message, the client never sees the ack
    publishing = asyncio.ensure_future(room.publish("once"))
    copy = await reader.recv_type("message")
    assert (copy["seq"], copy["data"]) == (1, "once")
    assert proxy.cut() >= 2
    proxy.resume()
    assert await asyncio.wait_for(publishing, 10) == 1  # the resend was a duplicate: the first seq
    assert room.resent == 1 and client.reconnects == 1 and proxy.accepted == 2
    # Bob's user_joined may have been held too; the rest is exact: the copy arrived only by the replay.
    stream = []
    while not stream or stream[-1][0] != "message":
        frame = await room.recv(5)
        if frame["type"] != "user_joined":
            stream.append((frame["type"], frame.get("recovered"), frame["seq"]))
    assert stream == [("welcome", False, 0), ("welcome", True, 1), ("message", None, 1)]
    assert await room.publish("marker") == 2  # nothing was published twice
    assert [(f["seq"], f["data"]) for f in [await reader.recv_type("message")]] == [(2, "marker")]


async def test_messages_published_while_disconnected_go_out_in_order_after_the_rejoin(
    made: Callable[..., Client], proxy: FaultProxy, clients: Clients
) -> None:
    client = made(proxy.port, make_token("alice"))
    room = await client.join("room")
    reader, _ = await clients.join("room", "bob")
    proxy.refusing = True
    proxy.cut()
    await wait_for(lambda: client.connected is None)
    publishing = [asyncio.ensure_future(room.publish(n)) for n in range(5)]
    await wait_for(lambda: room.unacked == 5)
    assert not any(task.done() for task in publishing) and room.unacked == 5
    proxy.refusing = False
    assert await asyncio.wait_for(asyncio.gather(*publishing), 10) == [1, 2, 3, 4, 5]
    assert [(await reader.recv_type("message"))["data"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert room.resent == 0  # never sent before: queued, not resent


async def test_a_resend_with_a_callers_id_is_applied_once(made: Callable[..., Client], port: int) -> None:
    client = made(port, make_token("alice"))
    room = await client.join("room")
    assert await room.publish("invoice", id="invoice-7") == 1
    assert await room.publish("invoice", id="invoice-7") == 1  # e.g. after the caller's own crash
    assert await room.publish("next") == 2
    with pytest.raises(ValueError, match="message id"):
        await room.publish("x", id="spaces are not allowed")
    for unsendable in (float("nan"), "Ann \ud83d"):  # refused here, not by the server or the socket
        with pytest.raises(ValueError):
            await room.publish(unsendable)
    assert room.unacked == 0 and await room.publish("still fine") == 3


async def test_a_publish_that_times_out_is_no_longer_resent(
    made: Callable[..., Client], proxy: FaultProxy, clients: Clients
) -> None:
    client = made(proxy.port, make_token("alice"))
    room = await client.join("room")
    reader, _ = await clients.join("room", "bob")
    proxy.hold_replies()
    with pytest.raises(TimeoutError):
        await room.publish("late", timeout=0.1)
    assert room.unacked == 0
    assert (await reader.recv_type("message"))["data"] == "late"  # published all the same
    proxy.resume()  # its ack arrives now, for nobody
    assert await room.publish("next") == 2 and room.resent == 0


async def test_leave_without_a_connection_ends_the_stream_at_once(
    made: Callable[..., Client], proxy: FaultProxy
) -> None:
    client = made(proxy.port, make_token("alice"))
    room = await client.join("room")
    proxy.refusing = True
    proxy.cut()
    await wait_for(lambda: client.connected is None)
    await room.leave()
    assert [frame["type"] async for frame in room] == ["welcome"]
    assert client.subscriptions == {}


class TestRefusedPublishes:
    @pytest.fixture
    def config(self) -> Config:
        # Two messages in the bucket, refilled every 4 s (joins have a budget of their own).
        return test_config(rate_limit=0.25, rate_burst=2)

    async def test_rate_limited_raises_with_the_code(self, made: Callable[..., Client], port: int) -> None:
        client = made(port, make_token("alice"))
        room = await client.join("room")
        assert [await room.publish("first"), await room.publish("second")] == [1, 2]
        with pytest.raises(PublishError) as info:
            await room.publish("third")
        assert info.value.code == "rate_limited" and info.value.session == "room"
        assert room.unacked == 0  # refused is final: not resent


async def test_a_viewers_publish_raises_forbidden_and_the_error_is_in_the_stream(
    made: Callable[..., Client], port: int
) -> None:
    client = made(port, make_token("eve", roles=["viewer"]))
    room = await client.join("room")
    with pytest.raises(PublishError) as info:
        await room.publish("hello")
    assert info.value.code == "forbidden"
    error = await next_of(room, "error")
    assert (error["code"], error["id"], error["session_id"]) == ("forbidden", info.value.message_id, "room")


# -- the socket: drops, refusals, close ---------------------------------------------------------


async def test_a_drop_resumes_every_session_from_its_own_position(
    made: Callable[..., Client], port: int, clients: Clients
) -> None:
    tokens = 0

    async def fresh_token() -> str:
        nonlocal tokens
        tokens += 1
        return make_token("alice")

    client = made(port, fresh_token)
    a, b = await client.join("a"), await client.join("b")
    writer, _ = await clients.join("a", "bob")
    for n in range(3):
        await writer.publish(n)
    assert [(await next_of(a, "message"))["seq"] for _ in range(3)] == [1, 2, 3]
    assert (await b.recv(5))["type"] == "welcome"  # the first one: every welcome is in the stream
    client.drop()
    await writer.publish(3)  # while alice is away, maybe
    welcome_a, welcome_b = await next_of(a, "welcome"), await next_of(b, "welcome")
    assert welcome_a["recovered"] and welcome_b["recovered"]
    assert [(await next_of(a, "message"))["seq"], await b.publish("b-1")] == [4, 1]
    assert tokens == 2 and client.reconnects == 1


async def test_a_bad_token_on_reconnect_ends_every_stream_and_publish(made: Callable[..., Client], port: int) -> None:
    tokens = iter([make_token("alice"), make_token("alice", ttl=-60)])
    client = made(port, lambda: next(tokens))
    a, b = await client.join("a"), await client.join("b")
    client.drop()
    waiting = asyncio.ensure_future(a.publish("lost"))
    for stream in (a, b):
        with pytest.raises(SessionClosed) as info:
            async for _ in stream:
                pass
        assert info.value.code == 1008
    with pytest.raises(SessionClosed):
        await waiting
    assert client.closed is not None and client.closed.code == 1008
    with pytest.raises(SessionClosed):
        client.join("c")


async def test_a_refused_first_token_raises_from_async_with(port: int) -> None:
    with pytest.raises(SessionClosed) as info:
        async with Client(f"ws://127.0.0.1:{port}/ws", "bad-token", backoff=FAST):
            pass
    assert info.value.code == 1008


async def test_close_stops_every_stream_and_refuses_waiting_publishes(
    made: Callable[..., Client], proxy: FaultProxy
) -> None:
    client = made(proxy.port, make_token("alice"))
    room = await client.join("room")
    proxy.refusing = True
    proxy.cut()
    await wait_for(lambda: client.connected is None)
    waiting = asyncio.ensure_future(room.publish("queued"))
    await wait_for(lambda: room.unacked == 1)
    await client.close()
    with pytest.raises(SessionClosed) as info:
        await waiting
    assert (info.value.code, info.value.reason) == (None, "client closed")
    assert [frame["type"] async for frame in room] == ["welcome"]  # what arrived, then the end
    assert proxy.accepted == 1


async def test_a_frame_over_the_servers_limit_ends_every_stream_with_1009(
    made: Callable[..., Client], port: int
) -> None:
    client = made(port, make_token("alice"))
    a, b = await client.join("a"), await client.join("b")
    with pytest.raises(SessionClosed) as info:
        await a.publish("x" * 70_000)
    assert info.value.code == 1009
    with pytest.raises(SessionClosed):
        async for _ in b:
            pass
    assert client.closed is info.value and client.reconnects == 0


async def test_token_expiry_reconnects_with_a_fresh_token(
    made: Callable[..., Client], port: int, caplog: pytest.LogCaptureFixture
) -> None:
    ttls = iter([1])

    def token() -> str:
        return make_token("alice", ttl=next(ttls, 3600))  # the first expires within a second or two

    client = made(port, token)
    room = await client.join("room")
    assert await room.publish("before") == 1
    frames = [await room.recv(5) for _ in range(2)]  # the first welcome and our message
    assert [f["type"] for f in frames] == ["welcome", "message"]
    welcome = await next_of(room, "welcome", timeout=5)  # the server closed with 4001; we came back
    assert welcome["recovered"] and client.reconnects == 1 and "code=4001" in caplog.text
    assert await room.publish("after") == 2


CONNECTED = json.dumps(
    {"type": "connected", "user_id": "alice", "org_id": "acme", "connection_id": "c", "expires_at": None}
)


@pytest.mark.parametrize(
    "frames",
    [[welcome()], [CONNECTED, welcome(seq="7")], ['{"type": "connected", "user_id": "alice"}']],
    ids=["welcome-first", "broken-welcome", "broken-connected"],
)
async def test_a_server_that_breaks_the_protocol_ends_every_stream(io_loop: IOLoop, frames: list[str]) -> None:
    server = await HostileServer(lambda n: Reply(frames=[*frames, "not json"], close_after=None)).start()
    client = Client(server.url, "token", backoff=FAST)
    try:
        room = client.join("room")
        with pytest.raises(SessionClosed) as info:
            async for _ in room:
                pass
        assert info.value.reason.startswith("protocol error") and len(server.attempts) == 1
    finally:
        await client.close()
        await server.stop()


async def test_frames_of_types_it_does_not_know_pass_through_and_seen_seqs_do_not(io_loop: IOLoop) -> None:
    presence = json.dumps({"type": "presence_state", "session_id": "room", "users": {}})
    messages = [json.dumps({"type": "message", "session_id": "room", "seq": n, "data": n}) for n in (1, 1, 2)]
    script = Reply(frames=[CONNECTED, welcome(), presence, *messages], close_after=None)
    server = await HostileServer(lambda n: script).start()
    client = Client(server.url, "token", backoff=FAST)
    try:
        room = await client.join("room")
        frames = [await room.recv(5) for _ in range(4)]
        assert [(f["type"], f.get("seq")) for f in frames] == [
            ("welcome", 0),
            ("presence_state", None),
            ("message", 1),
            ("message", 2),  # a seq seen already is dropped
        ]
    finally:
        await client.close()
        await server.stop()


def test_ids_are_valid_and_unique_across_clients() -> None:
    first, second = Client("ws://h:1", "t"), Client("ws://h:1/ws/", "t")
    ids = {first.next_message_id() for _ in range(1000)} | {second.next_message_id() for _ in range(1000)}
    assert len(ids) == 2000 and all(MESSAGE_ID.fullmatch(i) for i in ids)
    assert first.base_url == second.base_url == "ws://h:1"


# -- exactly once under cuts: 1,000 messages -------------------------------------------------------


async def until(predicate: Callable[[], bool], progress: asyncio.Event, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            progress.clear()
            await progress.wait()


async def exactly_once_through_cuts(sender: Client, receiver: Client, proxy: FaultProxy) -> None:
    """``sender`` (behind ``proxy``) publishes 1,000 messages, ``window`` in flight; every 150 acks
    the proxy holds the server's replies until the whole window is sequenced but unacked, then cuts."""
    total, every, window = 1000, 150, 25
    rx, tx = await receiver.join("feed"), await sender.join("feed")
    progress = asyncio.Event()
    seen: dict[str, list[tuple[int, Any]]] = {"receiver": [], "sender": []}

    async def consume(stream: Subscription, out: list[tuple[int, Any]]) -> None:
        async for frame in messages(stream):
            out.append((frame["seq"], frame["data"]))
            progress.set()
            if len(out) == total:
                return

    acks: dict[int, int] = {}
    slots = asyncio.Semaphore(window)

    async def publish(n: int) -> None:
        try:
            acks[n] = await tx.publish(n, timeout=20)
        finally:
            slots.release()
            progress.set()

    async def publish_all() -> None:
        tasks = []
        for n in range(total):
            await slots.acquire()
            tasks.append(asyncio.ensure_future(publish(n)))
        await asyncio.gather(*tasks)

    async def cut_mid_flight() -> int:
        cuts = 0
        for mark in range(every, total - window, every):
            await until(lambda mark=mark: len(acks) >= mark, progress)  # type: ignore[misc]
            proxy.hold_replies()
            await until(lambda: tx.unacked == window and len(seen["receiver"]) >= len(acks) + window, progress)
            assert proxy.cut() >= 2
            proxy.resume()
            cuts += 1
        return cuts

    consumers = [asyncio.ensure_future(consume(s, seen[k])) for s, k in ((rx, "receiver"), (tx, "sender"))]
    cuts, _ = await asyncio.wait_for(asyncio.gather(cut_mid_flight(), publish_all()), 30)
    await asyncio.wait_for(asyncio.gather(*consumers), 10)
    assert cuts == 6 and sender.reconnects == cuts and proxy.accepted == cuts + 1
    assert tx.resent >= cuts * window  # each cut left a full window sent but unacked
    assert sorted(acks) == list(range(total)) and sorted(acks.values()) == list(range(1, total + 1))
    order = seen["receiver"]
    assert [seq for seq, _ in order] == list(range(1, total + 1))
    assert all(acks[data] == seq for seq, data in order)  # each message once, at the seq its ack said
    assert seen["sender"] == order
    assert await rx.publish("after") == total + 1  # no resend was ever published a second time


async def test_exactly_once_through_cuts_memory(made: Callable[..., Client], port: int, proxy: FaultProxy) -> None:
    await exactly_once_through_cuts(made(proxy.port, make_token("alice")), made(port, make_token("bob")), proxy)


async def test_exactly_once_through_cuts_redis_two_nodes(
    redis_server: RedisServer, made: Callable[..., Client]
) -> None:
    redis_server.flush()
    nodes = [
        HubServer(test_hub(jwt_secret=SECRET, broker=redis_server.url, history_size=1000)).start() for _ in range(2)
    ]
    proxy = await FaultProxy(nodes[0].port).start()
    try:
        sender = made(proxy.port, make_token("alice"))
        receiver = made(nodes[1].port, make_token("bob"))
        await exactly_once_through_cuts(sender, receiver, proxy)
        # The other node sequenced nothing of its own: the API there sees the same stream.
        status, body = await call_api(nodes[1].port, "/api/sessions/feed/messages", {"data": "api"})
        assert (status, body) == (200, {"seq": 1002})
    finally:
        await sender.close()
        await receiver.close()
        await proxy.stop()
        await stop_nodes(nodes)


async def call_api(port: int, path: str, body: Any) -> tuple[int, Any]:
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}",
        method="POST",
        body=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {SERVICE}"},
        raise_error=False,
    )
    return response.code, json.loads(response.body)
