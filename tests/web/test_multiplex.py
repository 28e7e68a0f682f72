"""``/ws``: one connection in many sessions, through real sockets, on the memory broker and on
two nodes over one real Redis (a client on one node, its peers on the other)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer, require_redis_server
from tests.conftest import Client, Clients, MuxClient, make_token
from tests.nodes import Nodes

pytestmark = pytest.mark.usefixtures("no_errors_logged")

ADMIN = make_token("ops", roles=["admin"])
SERVICE = make_token("billing", roles=["service"])


async def test_one_connection_joins_several_sessions_and_each_frame_names_its_own(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice", name="Alice")
    connected = alice.connected
    assert set(connected) == {"type", "user_id", "org_id", "connection_id", "expires_at"}
    assert (connected["user_id"], connected["org_id"]) == ("alice", "acme")
    assert isinstance(connected["expires_at"], float) and connected["expires_at"] > 0
    chat = await alice.join("chat")
    feed = await alice.join("feed")
    for welcome, session in ((chat, "chat"), (feed, "feed")):
        assert welcome["connection_id"] == connected["connection_id"]
        assert welcome["participants"] == [{"user_id": "alice", "name": "Alice"}]
        assert (welcome["session_id"], welcome["seq"], welcome["recovered"]) == (session, 0, False)
    bob_chat = await nodes.single(1, "chat", "bob")
    assert await alice.recv_in("chat", "user_joined") == {
        "type": "user_joined",
        "session_id": "chat",
        "user_id": "bob",
        "participant_count": 2,
    }
    bob_feed = await nodes.mux(1, "bob")
    await bob_feed.join("feed")
    await alice.recv_in("feed", "user_joined")
    await alice.publish_in("chat", "to chat")
    await alice.publish_in("feed", "to feed")
    in_chat = await bob_chat.recv_type("message")
    in_feed = await bob_feed.recv_in("feed", "message")
    assert (in_chat["session_id"], in_chat["data"], in_chat["seq"]) == ("chat", "to chat", 1)
    assert (in_feed["session_id"], in_feed["data"], in_feed["seq"]) == ("feed", "to feed", 1)
    # Alice's own copies, each in its session, in the order she sent them.
    assert [(f["session_id"], f["data"]) for f in [await alice.recv(), await alice.recv()]] == [
        ("chat", "to chat"),
        ("feed", "to feed"),
    ]
    await bob_chat.assert_silent()
    await bob_feed.assert_silent()


async def test_leave_ends_one_membership_and_the_others_see_user_left(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice")
    first = await alice.join("a")
    await alice.join("b")
    bob = await nodes.mux(1, "bob")
    await bob.join("a")
    await alice.recv_in("a", "user_joined")
    assert await alice.leave("a") == {"type": "left", "session_id": "a", "code": 1000, "reason": "left"}
    left = await bob.recv_in("a", "user_left")
    assert (left["user_id"], left["participant_count"]) == ("alice", 1)
    # Not in "a" any more: its message and a second leave are refused; "b" is untouched.
    await alice.publish_in("a", "late", "m-1")
    assert await alice.recv() == {
        "type": "error",
        "code": "not_joined",
        "message": "this connection has not joined that session",
        "session_id": "a",
        "id": "m-1",
    }
    await alice.send({"type": "leave", "session": "a"})
    assert (await alice.recv())["code"] == "not_joined"
    await alice.publish_in("b", "still here")
    assert (await alice.recv_in("b", "message"))["data"] == "still here"
    # And it may join "a" again, resuming where it was.
    await bob.publish_in("a", "while away")
    assert (await bob.recv_in("a", "message"))["data"] == "while away"
    rejoined = await alice.join("a", since=0, epoch=first["epoch"])
    assert (rejoined["seq"], rejoined["recovered"]) == (1, True)
    replayed = await alice.recv()
    assert (replayed["session_id"], replayed["seq"], replayed["data"]) == ("a", 1, "while away")


async def test_a_second_join_is_already_joined_and_frames_without_a_session_are_refused(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice")
    await alice.join("room")
    await alice.send({"type": "join", "session": "room"})
    assert await alice.recv() == {
        "type": "error",
        "code": "already_joined",
        "message": "this connection is in that session already",
        "session_id": "room",
    }
    await alice.send({"type": "message", "data": "where?"})
    assert (await alice.recv())["code"] == "bad_frame"
    await alice.send({"type": "join"})
    assert (await alice.recv())["code"] == "bad_frame"
    await alice.send({"type": "join", "session": 7})
    assert (await alice.recv())["code"] == "bad_frame"
    # The membership survived all of it.
    await alice.publish_in("room", "fine", "m-1")
    # The ack and the copy race over Redis (the ack answers the script, the copy is pub/sub).
    frames = sorted([await alice.recv(), await alice.recv()], key=lambda f: str(f["type"]))
    assert frames[0] == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1}
    assert (frames[1]["type"], frames[1]["id"], frames[1]["seq"]) == ("message", "m-1", 1)


async def test_each_refusal_is_a_left_frame_with_the_close_code_and_the_socket_stays(
    make_nodes: Callable[..., Nodes],
) -> None:
    def authorize(claims: Any, session_id: str) -> bool:
        return session_id != "vault" and claims.raw.get("plan") == "pro"

    nodes = make_nodes(max_sessions_per_org=3, max_sessions_per_connection=4, authorize=authorize)
    alice = await nodes.mux(0, "alice", sessions=["s*", "vault", "bad*"], plan="pro")
    assert await alice.refused("bad id!") == {
        "type": "left",
        "session_id": "bad id!",
        "code": 1008,
        "reason": "invalid session id",
    }
    assert await alice.refused("elsewhere") == {
        "type": "left",
        "session_id": "elsewhere",
        "code": 4004,
        "reason": "session not allowed by token",
    }
    assert await alice.refused("vault") == {"type": "left", "session_id": "vault", "code": 4004, "reason": "forbidden"}
    for session in ("s1", "s2", "s3"):
        await alice.join(session)
    # The org's fourth session: 1013, and the connection's cap (4) is not what refused it.
    assert await alice.refused("s4") == {
        "type": "left",
        "session_id": "s4",
        "code": 1013,
        "reason": "too many sessions in this organization",
    }
    # A token without the plan the hook wants: the same rule on every join.
    basic = await nodes.mux(1, "bob", plan="free")
    assert (await basic.refused("s1"))["code"] == 4004
    await alice.publish_in("s1", "alive")
    assert (await alice.recv_in("s1", "message"))["data"] == "alive"


async def test_the_connection_cap_on_sessions_answers_left_1013(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(max_sessions_per_connection=3)
    alice = await nodes.mux(0, "alice")
    for session in ("a", "b", "c"):
        await alice.join(session)
    assert await alice.refused("d") == {
        "type": "left",
        "session_id": "d",
        "code": 1013,
        "reason": "too many sessions on this connection",
    }
    await alice.leave("a")
    await alice.join("d")  # room again after a leave
    # The cap is per connection: another socket of the same user joins "e" freely.
    other = await nodes.mux(1, "alice")
    await other.join("e")


async def test_a_kick_ends_one_membership_and_leaves_the_others_alone(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice")
    await alice.join("a")
    await alice.join("b")
    bob = await nodes.mux(1, "bob")
    await bob.join("a")
    status, body = await nodes.http(1, "DELETE", "/api/sessions/a/users/alice?ban_seconds=60", ADMIN)
    assert (status, body["connections_closed"]) == (200, 1)
    assert await alice.recv_in("a", "left") == {"type": "left", "session_id": "a", "code": 4003, "reason": "kicked"}
    assert (await bob.recv_in("a", "user_left"))["user_id"] == "alice"
    # Banned from "a" on every node; "b" still works on the same socket.
    assert await alice.refused("a") == {"type": "left", "session_id": "a", "code": 4003, "reason": "banned"}
    await alice.publish_in("b", "still in b")
    assert (await alice.recv_in("b", "message"))["data"] == "still in b"


async def test_a_user_is_one_participant_across_memberships_and_connections(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    bob = await nodes.mux(1, "bob")
    await bob.join("room")
    alice_mux = await nodes.mux(0, "alice")
    await alice_mux.join("room")
    assert (await bob.recv_in("room", "user_joined"))["participant_count"] == 2
    alice_tab = await nodes.single(1, "room", "alice")  # a second tab on /ws/room
    status, presence = await nodes.http(0, "GET", "/api/sessions/room/presence", SERVICE)
    assert (status, presence["participant_count"]) == (200, 2)
    await alice_mux.leave("room")  # still there through the tab: nobody is told anything
    await bob.assert_silent()
    await alice_tab.close()
    left = await bob.recv_in("room", "user_left")
    assert (left["user_id"], left["participant_count"]) == ("alice", 1)


async def test_the_per_user_cap_counts_connections_not_memberships(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(max_connections_per_user=2)
    alice = await nodes.mux(0, "alice")
    for index in range(5):
        await alice.join(f"s{index}")
    await nodes.single(1, "s0", "alice")
    # A third connection, on either endpoint and either node, is one too many.
    third = await nodes.clients(0).connect("s1", make_token("alice"))
    assert await third.closed_with() == (1013, "too many connections for this user")
    assert await mux_refusal(nodes.clients(1), make_token("alice")) == (1013, "too many connections for this user")
    # Closing the /ws socket gives its one place back, on every node.
    await alice.close()
    await reconnect_until_admitted(nodes.clients(1), make_token("alice"))


async def mux_refusal(clients: Clients, token: str) -> tuple[int | None, str]:
    ws = await websockets.connect(f"ws://127.0.0.1:{clients.port}/ws?token={token}", max_queue=None)
    return await Client(ws).closed_with()


async def reconnect_until_admitted(clients: Clients, token: str, timeout: float = 5.0) -> MuxClient:
    """A bounded poll on real connects, for a release the other node makes in Redis."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await clients.mux(token=token)
        except websockets.ConnectionClosed:
            assert loop.time() < deadline, "the connection's place was never given back"
            await asyncio.sleep(0.05)


async def test_acks_and_duplicates_hold_across_a_reconnect_and_across_nodes(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    bob = await nodes.mux(1, "bob")
    await bob.join("room")
    alice = await nodes.mux(0, "alice")
    await alice.join("room")
    await alice.join("other")
    await alice.publish_in("room", {"n": 1}, "m-1")
    ack = await alice.recv_in("room", "ack")
    assert ack == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1}
    copy = await bob.recv_in("room", "message")
    assert (copy["id"], copy["seq"], copy["data"]) == ("m-1", 1, {"n": 1})
    # The same id in another session is another message.
    await alice.publish_in("other", {"n": 1}, "m-1")
    assert await alice.recv_in("other", "ack") == {"type": "ack", "session_id": "other", "id": "m-1", "seq": 1}
    await alice.close()
    # The drop came before the ack, say: the resend on a new socket (the other node) is a duplicate.
    again = await nodes.mux(1, "alice")
    await again.join("room", since=1)
    await again.publish_in("room", {"n": 1}, "m-1")
    assert await again.recv_in("room", "ack") == {
        "type": "ack",
        "session_id": "room",
        "id": "m-1",
        "seq": 1,
        "duplicate": True,
    }
    await again.publish_in("room", "next")
    nxt = await bob.recv_in("room", "message")
    assert (nxt["seq"], nxt["data"]) == (2, "next")  # bob never saw m-1 twice


async def test_errors_name_the_session_and_the_message_they_refuse(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(rate_limit=1, rate_burst=2)
    viewer = await nodes.mux(0, "vera", roles=["viewer"])
    await viewer.join("room")
    await viewer.publish_in("room", "hi", "v-1")
    assert await viewer.recv() == {
        "type": "error",
        "code": "forbidden",
        "message": "viewers may not send messages",
        "session_id": "room",
        "id": "v-1",
    }
    await viewer.send({"type": "message", "session": "room", "data": 1, "id": "not an id!"})
    refused = await viewer.recv()
    assert (refused["code"], refused["session_id"], "id" in refused) == ("bad_frame", "room", False)
    # Past the burst: rate_limited, naming which message it dropped.
    await viewer.publish_in("room", "x", "v-2")
    limited = await viewer.recv()
    assert (limited["code"], limited["session_id"], limited["id"]) == ("rate_limited", "room", "v-2")


async def test_joins_have_their_own_budget_so_a_page_joins_its_sessions_at_once(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes(rate_limit=1, rate_burst=2, max_sessions_per_connection=30)
    alice = await nodes.mux(0, "alice")
    for index in range(30):
        await alice.send({"type": "join", "session": f"s{index}"})
    welcomes = [await alice.recv() for _ in range(30)]
    assert [w["session_id"] for w in welcomes] == [f"s{index}" for index in range(30)]
    await alice.publish_in("s0", "first", "m-1")  # the messages' budget is untouched
    assert (await alice.recv_in("s0", "ack"))["seq"] == 1


async def test_join_and_leave_churn_is_bounded_by_its_own_budget(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(rate_limit=1, rate_burst=2, max_sessions_per_connection=1)
    alice = await nodes.mux(0, "alice")
    for _ in range(40):  # 80 frames against a burst of 20 (10 x the burst; twice the cap is less)
        await alice.send({"type": "join", "session": "spin"})
        await alice.send({"type": "leave", "session": "spin"})
    await alice.send({"type": "ping"})
    answers = []
    while (frame := await alice.recv())["type"] != "pong":
        answers.append(frame)
    limited = [f for f in answers if f["type"] == "error" and f["code"] == "rate_limited"]
    assert limited and all(f["session_id"] == "spin" for f in limited)
    assert sum(1 for f in answers if f["type"] == "welcome") < 25


async def test_a_refresh_that_narrows_the_sessions_claim_leaves_those_sessions_only(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice", sessions=["a", "b"])
    await alice.join("a")
    await alice.join("b")
    await alice.send({"type": "refresh", "token": make_token("alice", sessions=["a"], ttl=120)})
    refreshed = await alice.recv()
    assert refreshed["type"] == "refreshed" and abs(refreshed["expires_at"] - (time.time() + 120)) < 5
    assert await alice.recv() == {
        "type": "left",
        "session_id": "b",
        "code": 4004,
        "reason": "session not allowed by token",
    }
    await alice.publish_in("a", "still in a")
    assert (await alice.recv_in("a", "message"))["data"] == "still in a"
    assert (await alice.refused("b"))["code"] == 4004  # the new claims hold for joins too


async def test_what_ends_the_socket_closes_it_even_in_no_session(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(jwt_leeway=0)
    short = await nodes.mux(0, "alice", ttl=1)
    idle = await nodes.mux(0, "bob")
    await idle.join("room")
    assert await short.closed_with() == (4001, "token expired")
    nodes.hubs[0].close_all()
    assert await idle.closed_with() == (1001, "server shutting down")


async def test_the_single_session_endpoint_knows_no_join_or_leave(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    single = await nodes.single(0, "room", "alice")
    for kind in ("join", "leave"):
        await single.send({"type": kind, "session": "elsewhere"})
        assert (await single.recv())["code"] == "unknown_type"
    await single.send({"type": "message", "data": "hi", "id": "m-1"})
    assert (await single.recv_type("ack"))["session_id"] == "room"


async def test_a_bad_token_on_ws_closes_1008(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    assert await mux_refusal(nodes.clients(0), "not-a-jwt") == (1008, "malformed token")


# -- Redis only: what only a shared broker can do --------------------------------------------


@pytest.fixture
def redis_nodes(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[Nodes]:
    nodes = Nodes(redis_server)
    yield nodes
    io_loop.run_sync(nodes.close)


async def test_a_restarted_stream_is_left_1012_for_that_session_only(
    redis_nodes: Nodes, redis_server: RedisServer
) -> None:
    alice = await redis_nodes.mux(0, "alice")
    await alice.join("room")
    await alice.join("quiet")
    await alice.publish_in("room", "before", "m-1")
    await alice.recv_in("room", "ack")
    redis_server.flush()  # Redis lost everything: the next publish starts a new epoch
    assert (await redis_nodes.http(1, "POST", "/api/sessions/room/messages", SERVICE, {"data": 1}))[0] == 200
    assert await alice.recv_in("room", "left") == {
        "type": "left",
        "session_id": "room",
        "code": 1012,
        "reason": "session stream restarted",
    }
    await alice.send({"type": "ping"})
    assert await alice.recv() == {"type": "pong"}


async def test_a_join_while_redis_is_down_is_left_1013_and_the_socket_stays(io_loop: IOLoop) -> None:
    require_redis_server()
    redis = RedisServer().start()
    nodes = Nodes(redis)
    try:
        alice = await nodes.mux(0, "alice")
        redis.stop()
        assert await alice.refused("room") == {
            "type": "left",
            "session_id": "room",
            "code": 1013,
            "reason": "unavailable; try again later",
        }
        await alice.send({"type": "ping"})
        assert await alice.recv() == {"type": "pong"}
    finally:
        await nodes.close()
        redis.cleanup()


def test_connections_keep_their_slots_and_no_instance_dict() -> None:
    # An idle connection costs ~2 KiB (docs/performance.md); a base class without __slots__
    # (a mixin, say) would give every connection a dict and cost more than that.
    from tornado_ws.web.connection import Connection
    from tornado_ws.web.multiplex import MultiplexConnection

    assert Connection.__dictoffset__ == 0 and MultiplexConnection.__dictoffset__ == 0
