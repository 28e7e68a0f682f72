"""Presence state, signals and big rooms (issue #17), through real sockets, on the memory broker
and on two nodes over one real Redis: the frames work on ``/ws`` (with ``session``) and on
``/ws/<session_id>`` (without)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer
from tests.conftest import Client, MuxClient, make_token, wait_for
from tests.nodes import Nodes
from tests.rawws import raw_upgrade, read_frame, text_frame
from tests.web.test_multiplex import SERVICE

pytestmark = pytest.mark.usefixtures("no_errors_logged")


async def set_state(client: MuxClient, session: str, state: Any) -> None:
    await client.send({"type": "presence", "session": session, "state": state})


async def signal(client: MuxClient, session: str, data: Any, key: str | None = "cursor") -> None:
    frame: dict[str, Any] = {"type": "signal", "session": session, "data": data}
    if key is not None:
        frame["key"] = key
    await client.send(frame)


async def states_until(client: Client, session: str, user: str, last: Any) -> list[Any]:
    """The ``presence_state`` frames of ``user`` that ``client`` gets, up to one with ``last``."""
    seen = []
    while True:
        frame = await client.recv()
        if frame["type"] == "presence_state" and frame["session_id"] == session and frame["user_id"] == user:
            seen.append(frame["state"])
            if frame["state"] == last:
                return seen


async def test_presence_state_reaches_every_member_and_is_in_the_welcome_and_the_api(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice", name="Alice")
    await alice.join("doc")
    alice_tab = await nodes.single(1, "doc", "alice", name="Alice")  # the user's other connection
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    await set_state(alice, "doc", {"typing": True, "page": 3})
    expected = {"type": "presence_state", "session_id": "doc", "user_id": "alice", "state": {"typing": True, "page": 3}}
    assert await bob.recv_in("doc", "presence_state") == expected
    assert await alice_tab.recv_type("presence_state") == expected
    assert await alice.recv_in("doc", "presence_state") == expected
    carol = await nodes.mux(0, "carol")
    welcome = await carol.join("doc")
    by_user = {p["user_id"]: p for p in welcome["participants"]}
    assert by_user["alice"] == {"user_id": "alice", "name": "Alice", "state": {"typing": True, "page": 3}}
    assert "state" not in by_user["bob"]
    status, presence = await nodes.http(1, "GET", "/api/sessions/doc/presence", SERVICE)
    assert status == 200
    assert {p["user_id"]: p.get("state") for p in presence["participants"]} == {
        "alice": {"typing": True, "page": 3},
        "bob": None,
        "carol": None,
    }
    everywhere = await nodes.hubs[0].fetch_presence("acme", "doc")
    assert [p.get("state") for p in everywhere["participants"] if p["user_id"] == "alice"] == [
        {"typing": True, "page": 3}
    ]


async def test_a_burst_of_updates_arrives_as_fewer_frames_ending_with_the_latest(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice")
    await alice.join("doc")
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    for n in range(30):
        await set_state(alice, "doc", {"n": n})
    seen = await states_until(bob, "doc", "alice", {"n": 29})
    assert len(seen) < 30, seen
    assert [s["n"] for s in seen] == sorted(s["n"] for s in seen)  # never an older one after a newer
    await bob.assert_silent()


async def test_a_users_state_is_its_newest_connections_and_goes_with_its_last(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    phone = await nodes.mux(0, "alice")
    await phone.join("doc")
    laptop = await nodes.mux(1, "alice")
    await laptop.join("doc")
    await set_state(phone, "doc", {"on": "phone"})
    await states_until(bob, "doc", "alice", {"on": "phone"})
    await set_state(laptop, "doc", {"on": "laptop"})
    await states_until(bob, "doc", "alice", {"on": "laptop"})
    # The laptop leaves: the user's state is the phone's again, for everyone.
    await laptop.leave("doc")
    await states_until(bob, "doc", "alice", {"on": "phone"})
    await phone.leave("doc")
    left = await bob.recv_in("doc", "user_left")
    assert left["user_id"] == "alice"
    # Gone with the last connection: a newcomer sees no trace of it.
    again = await nodes.mux(0, "alice")
    welcome = await again.join("doc")
    assert [p for p in welcome["participants"] if p["user_id"] == "alice"] == [{"user_id": "alice"}]


async def test_state_size_and_shape_are_checked_and_viewers_may_set_it(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(max_presence_state_size=64)
    viewer = await nodes.mux(0, "vera", roles=["viewer"])
    await viewer.join("doc")
    await set_state(viewer, "doc", {"pad": "x" * 64})
    assert await viewer.recv() == {
        "type": "error",
        "code": "state_too_large",
        "message": "a presence state is at most 64 bytes",
        "session_id": "doc",
    }
    await set_state(viewer, "doc", ["not", "an", "object"])
    assert (await viewer.recv())["code"] == "bad_frame"
    await set_state(viewer, "elsewhere", {"a": 1})
    assert (await viewer.recv())["code"] == "not_joined"
    await set_state(viewer, "doc", {"viewing": "page 3"})
    assert (await viewer.recv_in("doc", "presence_state"))["state"] == {"viewing": "page 3"}
    # It changed no stream: the session's seq is still 0.
    newcomer = await nodes.mux(1, "nina")
    assert (await newcomer.join("doc"))["seq"] == 0


async def test_the_single_session_endpoint_takes_the_same_frames_without_a_session(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes()
    alice = await nodes.single(0, "doc", "alice")
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    await alice.recv_type("user_joined")
    await alice.send({"type": "presence", "state": {"typing": True}})
    assert (await bob.recv_in("doc", "presence_state"))["state"] == {"typing": True}
    await alice.send({"type": "signal", "data": {"x": 1, "y": 2}, "key": "cursor"})
    assert await bob.recv_in("doc", "signal") == {
        "type": "signal",
        "session_id": "doc",
        "user_id": "alice",
        "key": "cursor",
        "data": {"x": 1, "y": 2},
    }


async def test_signals_reach_the_others_not_the_sender_and_are_never_stored(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes()
    alice = await nodes.mux(0, "alice", name="Alice")
    first = await alice.join("doc")
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    await signal(alice, "doc", {"x": 10, "y": 20})
    await signal(alice, "doc", {"typing": True}, key=None)
    assert await bob.recv_in("doc", "signal") == {
        "type": "signal",
        "session_id": "doc",
        "user_id": "alice",
        "name": "Alice",
        "key": "cursor",
        "data": {"x": 10, "y": 20},
    }
    unkeyed = await bob.recv_in("doc", "signal")
    assert "key" not in unkeyed and unkeyed["data"] == {"typing": True} and "seq" not in unkeyed
    await bob.assert_silent()
    # Not to the sender (its ping comes back alone), not sequenced, not replayed.
    await alice.send({"type": "ping"})
    frames = []
    while (frame := await alice.recv())["type"] != "pong":
        frames.append(frame)
    assert [f["type"] for f in frames] == ["user_joined"]
    await alice.leave("doc")
    again = await alice.join("doc", since=0, epoch=first["epoch"])
    assert (again["seq"], again["recovered"]) == (0, True)
    # Nothing replayed, and over Redis not even its own user_left, which its new welcome shows.
    await alice.assert_silent()


async def test_signals_have_their_own_budget_and_one_error_a_second(make_nodes: Callable[..., Nodes]) -> None:
    nodes = make_nodes(signal_rate=2, signal_burst=5, rate_limit=1, rate_burst=3)
    alice = await nodes.mux(0, "alice")
    await alice.join("doc")
    bob = await nodes.mux(1, "bob")
    await bob.join("doc")
    await alice.recv_in("doc", "user_joined")
    for n in range(20):
        await signal(alice, "doc", {"n": n}, key=None)
    await alice.publish_in("doc", "durable", "m-1")  # the messages' budget is untouched
    answers = []
    while (frame := await alice.recv())["type"] != "ack":
        answers.append(frame)
    errors = [f for f in answers if f["type"] == "error"]
    assert errors == [
        {
            "type": "error",
            "code": "rate_limited",
            "message": "too many frames; this one was dropped",
            "session_id": "doc",
        }
    ]  # one for the fifteen dropped, not fifteen
    got = []
    while (frame := await bob.recv())["type"] != "message":
        if frame["type"] == "signal":
            got.append(frame["data"]["n"])
    assert got == [0, 1, 2, 3, 4]  # the burst; the rest were dropped
    assert nodes.hubs[0].state.metrics.signals_dropped == 15


async def test_latest_wins_toward_a_receiver_that_does_not_read_and_it_is_never_cut(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes(signal_rate=0, max_outbound_buffer=64 * 1024)
    server = nodes.servers[-1]
    reader, writer, welcome = await raw_upgrade(server.port, "doc", make_token("slow"), rcvbuf=4096)
    assert welcome["type"] == "welcome"
    alice = await nodes.mux(0, "alice")
    await alice.join("doc")
    sent = 3000
    pad = "x" * 2000
    for n in range(sent):  # ~6 MB of cursor moves: far more than the buffers between us hold
        await signal(alice, "doc", {"n": n, "pad": pad})
    await alice.publish_in("doc", "marker", "m-1")
    assert (await alice.recv_in("doc", "ack"))["seq"] == 1
    # Now it reads: it was never cut (no close frame), and it ends with the newest cursor.
    seen: list[int] = []
    marker = False
    while not (marker and seen and seen[-1] == sent - 1):
        opcode, payload = await read_frame(reader)
        assert opcode == 0x1, (opcode, payload[:40])
        frame = json.loads(payload)
        if frame["type"] == "signal":
            seen.append(frame["data"]["n"])
        elif frame["type"] == "message":
            marker = True
    assert len(seen) < sent, "nothing was replaced"
    assert seen == sorted(seen)
    writer.write(text_frame({"type": "ping"}))
    await writer.drain()
    while json.loads((await read_frame(reader))[1])["type"] != "pong":
        pass
    writer.close()


async def test_a_big_session_truncates_the_welcome_and_summarises_joins_and_leaves(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes(presence_roster_limit=3)
    first = await nodes.mux(0, "u0")
    await first.join("hall")
    others = []
    for n in range(1, 3):  # up to the limit: everything as today
        other = await nodes.mux(n % 2, f"u{n}")
        await other.join("hall")
        others.append(other)
        joined = await first.recv_in("hall", "user_joined")
        assert (joined["user_id"], joined["participant_count"]) == (f"u{n}", n + 1)
    late = await nodes.mux(1, "u3")
    welcome = await late.join("hall")
    assert welcome["participant_count"] == 4 and welcome["participants_truncated"] is True
    assert [p["user_id"] for p in welcome["participants"]] == ["u0", "u1", "u2"]
    summary = await first.recv_in("hall", "presence_summary")
    assert summary == {
        "type": "presence_summary",
        "session_id": "hall",
        "participant_count": 4,
        "joined": ["u3"],
        "left": [],
    }
    for n in (4, 5):
        extra = await nodes.mux(n % 2, f"u{n}")
        await extra.join("hall")
    await others[0].leave("hall")
    # At most one summary a second: the next one holds all three changes, newest first.
    assert await first.recv_in("hall", "presence_summary") == {
        "type": "presence_summary",
        "session_id": "hall",
        "participant_count": 5,
        "joined": ["u5", "u4"],
        "left": ["u1"],
    }
    status, page = await nodes.http(0, "GET", "/api/sessions/hall/presence?limit=2", SERVICE)
    assert status == 200 and page["participant_count"] == 5 and len(page["participants"]) == 2
    users = [p["user_id"] for p in page["participants"]]
    while page["next_cursor"] is not None:
        status, page = await nodes.http(
            0, "GET", f"/api/sessions/hall/presence?limit=2&cursor={page['next_cursor']}", SERVICE
        )
        users += [p["user_id"] for p in page["participants"]]
    assert users == ["u0", "u2", "u3", "u4", "u5"]
    status, body = await nodes.http(0, "GET", "/api/sessions/hall/presence?limit=0", SERVICE)
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = await nodes.http(0, "GET", "/api/sessions/hall/presence?cursor=%25%25", SERVICE)
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_unkeyed_signals_to_a_stalled_reader_are_dropped_past_its_waiting_slots_and_counted(
    make_nodes: Callable[..., Nodes],
) -> None:
    nodes = make_nodes(signal_rate=0, max_outbound_buffer=64 * 1024)
    receiving = nodes.servers[-1]
    reader, writer, _ = await raw_upgrade(receiving.port, "doc", make_token("slow"), rcvbuf=4096)
    alice = await nodes.mux(0, "alice")
    await alice.join("doc")
    pad = "y" * 2000
    for n in range(3000):  # no key: none replaces another, so the stalled reader's slots fill up
        await signal(alice, "doc", {"n": n, "pad": pad}, key=None)
    await alice.publish_in("doc", "marker", "m-1")
    assert (await alice.recv_in("doc", "ack"))["seq"] == 1
    got = 0
    while True:
        frame = json.loads((await read_frame(reader))[1])
        if frame["type"] == "message":
            break
        got += 1
    # Durable frames are never dropped: the marker came; signals past the waiting slots were.
    assert got < 3000
    assert nodes.hubs[-1].state.metrics.signals_dropped > 0
    writer.close()


async def read_all(client: Client, into: list[dict[str, Any]]) -> None:
    """Every frame ``client`` gets, until it closes."""
    with contextlib.suppress(Exception):
        while True:
            into.append(await client.recv(timeout=30))


@pytest.mark.parametrize("limit", [1000, 10], ids=["frames", "summaries"])
async def test_concurrent_joins_over_redis_announce_each_user_once_and_end_at_the_true_count(
    redis_server: RedisServer, io_loop: IOLoop, limit: int
) -> None:
    # Announcements are published by the join and leave scripts themselves, each with the
    # session's presence version: none is sent to a member whose welcome already shows it, and
    # every node sees them in the scripts' order, so the last count anyone hears is the true one.
    nodes = Nodes(redis_server, presence_roster_limit=limit)
    try:
        seen: dict[int, list[dict[str, Any]]] = {n: [] for n in range(24)}
        readers = []
        gate = asyncio.Semaphore(8)

        async def join(n: int) -> None:
            async with gate:
                client = await nodes.clients(n).connect("hall", make_token(f"u{n}"))
                readers.append(asyncio.ensure_future(read_all(client, seen[n])))
                await wait_for(lambda: bool(seen[n]))

        await asyncio.gather(*(join(n) for n in range(24)))

        def view(frames: list[dict[str, Any]]) -> tuple[set[str], int]:
            users = {p["user_id"] for p in frames[0]["participants"]}
            count = frames[0]["participant_count"]
            for frame in frames[1:]:
                if frame["type"] == "user_joined":
                    assert frame["user_id"] not in users, f"announced again: {frame}"
                    users.add(frame["user_id"])
                elif frame["type"] == "presence_summary":
                    users |= set(frame["joined"])
                if frame["type"] in ("user_joined", "presence_summary"):
                    count = frame["participant_count"]
            return users, count

        await wait_for(lambda: all(view(frames)[1] == 24 for frames in seen.values()), timeout=8)
        if limit == 1000:
            assert all(view(frames)[0] == {f"u{n}" for n in range(24)} for frames in seen.values())
        for task in readers:
            task.cancel()
    finally:
        await nodes.close()
