"""The Python clients' presence state, signals and participants view (issue #17) against real
servers: the memory broker, and two nodes over one real Redis (tests/nodes.py), with
tests/faultproxy.py in front of node 0 where a test cuts the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from tests.conftest import make_token, wait_for
from tests.faultproxy import FaultProxy
from tests.nodes import Nodes
from tornado_ws.client import Backoff, Client, PresenceError, SessionClient, Subscription, connect
from tornado_ws.client.roster import Roster

pytestmark = pytest.mark.usefixtures("no_errors_logged")
# The web tests' nodes (one memory hub, or two hubs over one Redis), shared with this module.

FAST = Backoff(base=0.02, cap=0.2)
#: Client-side behaviour the brokers cannot change: run it on memory only.
MEMORY_ONLY = pytest.mark.parametrize("make_nodes", ["memory"], indirect=True)
Stream = Subscription | SessionClient


class Mesh:
    """The nodes of one test, a proxy in front of node 0, and the clients opened on them."""

    def __init__(self, nodes: Nodes, proxy: FaultProxy) -> None:
        self.nodes = nodes
        self.proxy = proxy
        self.opened: list[Client | SessionClient] = []

    def port(self, node: int, proxied: bool) -> int:
        return self.proxy.port if proxied else self.nodes.servers[node % len(self.nodes.servers)].port

    def client(self, node: int, user: str, *, proxied: bool = False, **claims: Any) -> Client:
        client = Client(f"ws://127.0.0.1:{self.port(node, proxied)}", make_token(user, **claims), backoff=FAST)
        self.opened.append(client)
        return client

    async def join(self, node: int, session: str, user: str, *, proxied: bool = False, **claims: Any) -> Subscription:
        return await self.client(node, user, proxied=proxied, **claims).join(session)

    async def single(self, node: int, session: str, user: str, *, proxied: bool = False) -> SessionClient:
        client = await connect(f"ws://127.0.0.1:{self.port(node, proxied)}", make_token(user), session, backoff=FAST)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            await client.close()
        await self.proxy.stop()


@pytest.fixture
def mesh(make_nodes: Callable[..., Nodes], io_loop: IOLoop) -> Iterator[Callable[..., Any]]:
    """``await mesh(**settings)``: nodes with those settings; clients and proxy closed before them."""
    made: list[Mesh] = []

    async def make(**settings: Any) -> Mesh:
        nodes = make_nodes(**settings)
        made.append(Mesh(nodes, await FaultProxy(nodes.servers[0].port).start()))
        return made[-1]

    yield make
    for each in made:
        io_loop.run_sync(each.close)


async def next_of(stream: Stream, kind: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
    """The stream's next frame of type ``kind`` (with ``fields``), skipping others."""
    while True:
        frame = await stream.recv(timeout)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame


async def frames_until(stream: Stream, kind: str, **fields: Any) -> list[dict[str, Any]]:
    """Every frame of the stream up to and including the next of ``kind`` (with ``fields``)."""
    frames = [await stream.recv(5)]
    while not (frames[-1]["type"] == kind and all(frames[-1].get(k) == v for k, v in fields.items())):
        frames.append(await stream.recv(5))
    return frames


async def cut_and_wait_for_the_drop(mesh: Mesh, observer: Stream, user: str) -> None:
    """Cut node 0's proxied clients and keep them out until ``observer`` saw ``user`` leave:
    the server dropped the user's state with its last connection."""
    mesh.proxy.refusing = True
    assert mesh.proxy.cut() >= 2
    assert (await next_of(observer, "user_left"))["user_id"] == user
    assert user not in observer.participants


# -- presence state -------------------------------------------------------------------------------


async def test_a_state_is_confirmed_reaches_the_others_and_is_in_a_newcomers_welcome(mesh: Any) -> None:
    m: Mesh = await mesh()
    alice = await m.join(0, "doc", "alice", name="Alice")
    bob = await m.join(1, "doc", "bob")
    await alice.set_presence({"typing": True, "page": (3, 4)})
    # Returned on its own echo, already in its stream: the state as the server announced it.
    echo = await next_of(alice, "presence_state")
    state = {"typing": True, "page": [3, 4]}
    assert echo == {"type": "presence_state", "session_id": "doc", "user_id": "alice", "state": state}
    assert alice.presence == state
    assert alice.participants["alice"] == {"user_id": "alice", "name": "Alice", "state": state}
    assert await next_of(bob, "presence_state") == echo
    assert bob.participants["alice"] == {"user_id": "alice", "name": "Alice", "state": state}
    carol = await m.join(0, "doc", "carol")
    assert carol.participants["alice"]["state"] == state and "state" not in carol.participants["bob"]
    assert (carol.participant_count, set(carol.participants)) == (3, {"alice", "bob", "carol"})
    with pytest.raises(TypeError, match="a presence state is a dict"):
        await alice.set_presence(["typing"])  # type: ignore[arg-type]
    for unsendable in ({"x": float("nan")}, {"name": "Ann \ud83d"}):
        with pytest.raises(ValueError):
            await alice.set_presence(unsendable)
    assert alice.presence == state


@MEMORY_ONLY
async def test_a_refused_state_raises_and_the_state_before_it_stays(mesh: Any) -> None:
    m: Mesh = await mesh(max_presence_state_size=64)
    alice = await m.join(0, "doc", "alice")
    bob = await m.join(0, "doc", "bob")
    await alice.set_presence({"page": 1})
    with pytest.raises(PresenceError) as info:
        await alice.set_presence({"pad": "x" * 64})
    assert (info.value.code, info.value.session) == ("state_too_large", "doc")
    assert alice.presence == {"page": 1}  # what the server still has: what a reconnect sends again
    error = await next_of(alice, "error")  # the server's answer is in the stream too
    assert (error["code"], error["session_id"], "id" in error) == ("state_too_large", "doc", False)
    await alice.set_presence({"page": 2})
    frames = await frames_until(bob, "presence_state", state={"page": 2})
    assert {"pad": "x" * 64} not in [f.get("state") for f in frames]


@MEMORY_ONLY
async def test_a_burst_of_calls_is_coalesced_and_a_state_dropped_over_the_rate_limit_is_sent_again(
    mesh: Any,
) -> None:
    m: Mesh = await mesh(rate_limit=2, rate_burst=2)  # two frames, then one every 500 ms
    alice = await m.join(0, "doc", "alice")
    bob = await m.join(0, "doc", "bob")
    await asyncio.gather(*(alice.set_presence({"n": n}) for n in range(30)))
    # Thirty frames would have met 28 rate_limited errors: two went, the first and the newest.
    own = await frames_until(alice, "presence_state", state={"n": 29})
    assert [f["type"] for f in own if f["type"] == "error"] == []
    states = [f["state"]["n"] for f in await frames_until(bob, "presence_state", state={"n": 29}) if "state" in f]
    assert states == [0, 29]
    # The bucket is empty now: this frame is dropped, and sent again until it gets through.
    await asyncio.wait_for(alice.set_presence({"n": 30}), 5)
    frames = await frames_until(alice, "presence_state", state={"n": 30})
    assert [(f["type"], f.get("code")) for f in frames if f["type"] == "error"][:1] == [("error", "rate_limited")]
    assert (await next_of(bob, "presence_state"))["state"] == {"n": 30}


async def test_the_state_is_sent_again_after_a_cut_and_one_set_while_away_after_the_rejoin(mesh: Any) -> None:
    m: Mesh = await mesh()
    alice_client = m.client(0, "alice", proxied=True)
    alice = await alice_client.join("doc")
    bob = await m.join(1, "doc", "bob")
    await alice.set_presence({"typing": True})
    assert (await next_of(bob, "presence_state"))["state"] == {"typing": True}
    await cut_and_wait_for_the_drop(m, bob, "alice")
    m.proxy.refusing = False
    assert (await next_of(bob, "user_joined"))["user_id"] == "alice"
    echo = await next_of(bob, "presence_state")
    assert (echo["user_id"], echo["state"]) == ("alice", {"typing": True})  # sent again after the welcome
    assert bob.participants["alice"] == {"user_id": "alice", "state": {"typing": True}}
    rejoined = await next_of(alice, "welcome", recovered=True)
    assert [p for p in rejoined["participants"] if p["user_id"] == "alice"] == [{"user_id": "alice"}]
    assert alice_client.reconnects == 1
    # Set while away: it waits for the welcome, then it is the state sent.
    await cut_and_wait_for_the_drop(m, bob, "alice")
    setting = asyncio.ensure_future(alice.set_presence({"typing": False}))
    await wait_for(lambda: alice_client.connected is None and alice.presence == {"typing": False})
    assert not setting.done()
    m.proxy.refusing = False
    await asyncio.wait_for(setting, 5)
    assert (await next_of(bob, "presence_state"))["state"] == {"typing": False}
    assert alice.participants["alice"]["state"] == {"typing": False}


# -- signals -------------------------------------------------------------------------------------


async def test_signals_reach_the_others_not_the_sender_and_are_dropped_while_disconnected(mesh: Any) -> None:
    m: Mesh = await mesh()
    alice_client = m.client(0, "alice", proxied=True, name="Alice")
    alice = await alice_client.join("doc")
    bob = await m.join(1, "doc", "bob")
    assert alice.signal({"x": 10, "y": 20}, key="cursor") and alice.signal("typing")
    assert await next_of(bob, "signal") == {
        "type": "signal",
        "session_id": "doc",
        "user_id": "alice",
        "name": "Alice",
        "key": "cursor",
        "data": {"x": 10, "y": 20},
    }
    unkeyed = await next_of(bob, "signal")
    assert (unkeyed["data"], "key" in unkeyed, "seq" in unkeyed) == ("typing", False, False)
    assert await alice.publish("marker") == 1  # after the signals, on the same channel
    assert "signal" not in [f["type"] for f in await frames_until(alice, "message")]
    for key in ("", "k" * 65):
        with pytest.raises(ValueError, match="signal key"):
            alice.signal(1, key=key)
    with pytest.raises(TypeError):
        alice.signal(object())
    # Away: dropped at once, never queued for the rejoin.
    await cut_and_wait_for_the_drop(m, bob, "alice")
    await wait_for(lambda: alice_client.connected is None)
    assert alice.signal({"x": 0, "y": 0}, key="cursor") is False
    m.proxy.refusing = False
    await next_of(alice, "welcome", recovered=True)
    assert await alice.publish("after") == 2
    assert "signal" not in [f["type"] for f in await frames_until(bob, "message", seq=2)]
    assert bob.signal({"x": 1, "y": 1}, key="cursor")
    assert (await next_of(alice, "signal"))["data"] == {"x": 1, "y": 1}


# -- the participants view ------------------------------------------------------------------------


async def test_the_participants_view_follows_joins_leaves_and_states(mesh: Any) -> None:
    m: Mesh = await mesh()
    alice = await m.join(0, "doc", "alice", name="Alice")
    assert dict(alice.participants) == {"alice": {"user_id": "alice", "name": "Alice"}}
    assert (alice.participant_count, alice.participants_truncated) == (1, False)
    bob = await m.join(1, "doc", "bob")
    bob_tab = await m.join(0, "doc", "bob")  # the same user again: one participant
    await next_of(alice, "user_joined")
    assert alice.participants["bob"] == {"user_id": "bob"} and alice.participant_count == 2
    await bob.set_presence({"page": 3})
    await next_of(alice, "presence_state")
    held = alice.participants["bob"]
    assert held == {"user_id": "bob", "state": {"page": 3}}
    await bob.leave()  # its state goes; the tab stays, without one
    assert (await next_of(alice, "presence_state"))["state"] is None
    assert alice.participants["bob"] == {"user_id": "bob"} and held["state"] == {"page": 3}  # replaced, not changed
    with pytest.raises(TypeError):
        alice.participants["mallory"] = {"user_id": "mallory"}  # type: ignore[index]
    await bob_tab.leave()
    await next_of(alice, "user_left")
    assert list(alice.participants) == ["alice"] and alice.participant_count == 1


@MEMORY_ONLY
async def test_a_truncated_welcome_says_so_and_summaries_keep_the_view(mesh: Any) -> None:
    m: Mesh = await mesh(presence_roster_limit=2)
    first = await m.join(0, "hall", "u0")
    second = await m.join(0, "hall", "u1")
    await next_of(first, "user_joined")
    late = await m.join(0, "hall", "u2")
    assert late.welcome is not None and late.welcome["participants_truncated"] is True
    assert [p["user_id"] for p in late.welcome["participants"]] == ["u0", "u1"]
    assert (late.participants_truncated, late.participant_count) == (True, 3)
    await next_of(late, "presence_summary", joined=["u2"])  # its own join too: it is in its view now
    await next_of(first, "presence_summary", joined=["u2"])
    assert (first.participants_truncated, first.participant_count) == (False, 3)
    assert set(first.participants) == set(late.participants) == {"u0", "u1", "u2"}
    await late.set_presence({"here": True})
    assert late.participants["u2"] == {"user_id": "u2", "state": {"here": True}}
    await second.leave()
    await next_of(first, "presence_summary")  # a second after the first one
    assert (set(first.participants), first.participant_count) == ({"u0", "u2"}, 2)
    assert first.participants["u2"]["state"] == {"here": True}
    await next_of(late, "presence_summary", left=["u1"])
    assert (set(late.participants), late.participant_count, late.participants_truncated) == ({"u0", "u2"}, 2, True)


# -- the single-session client --------------------------------------------------------------------


async def test_the_single_session_client_sets_presence_signals_and_sends_its_state_again(mesh: Any) -> None:
    m: Mesh = await mesh()
    alice = await m.single(0, "doc", "alice", proxied=True)
    bob = await m.join(1, "doc", "bob")
    await alice.set_presence({"typing": True})
    assert (await next_of(bob, "presence_state"))["state"] == {"typing": True}
    assert alice.signal({"x": 1, "y": 2}, key="cursor")
    assert (await next_of(bob, "signal"))["data"] == {"x": 1, "y": 2}
    assert bob.signal({"x": 3, "y": 4}, key="cursor")
    assert (await next_of(alice, "signal"))["data"] == {"x": 3, "y": 4}
    assert alice.participants["alice"]["state"] == {"typing": True} and set(alice.participants) == {"alice", "bob"}
    with pytest.raises(TypeError):
        await alice.set_presence("typing")  # type: ignore[arg-type]
    await cut_and_wait_for_the_drop(m, bob, "alice")
    await wait_for(lambda: not alice.connected)
    assert alice.signal("lost") is False
    m.proxy.refusing = False
    echo = await next_of(bob, "presence_state")
    assert (echo["user_id"], echo["state"]) == ("alice", {"typing": True})
    assert alice.reconnects == 1


def test_the_roster_takes_what_a_truncated_list_left_out_and_knows_when_it_may_miss_some() -> None:
    roster = Roster()
    roster.apply({"type": "welcome", "participants": [{"user_id": "u0"}], "participant_count": 5000})
    assert (dict(roster.view), roster.count, roster.truncated) == ({"u0": {"user_id": "u0"}}, 5000, False)
    roster.apply({"type": "presence_state", "user_id": "u9", "state": {"x": 1}})  # only a participant has one
    roster.apply({"type": "presence_state", "user_id": "u8", "state": None})
    assert set(roster.view) == {"u0", "u9"}
    joined = [f"n{i}" for i in range(100)]
    roster.apply({"type": "presence_summary", "participant_count": 5100, "joined": joined, "left": ["u0"]})
    assert (len(roster.view), "u0" in roster.view, roster.count, roster.truncated) == (101, False, 5100, True)
    roster.apply({"type": "welcome", "participants": [], "participant_count": 0})  # a rejoin starts again
    assert (dict(roster.view), roster.truncated) == ({}, False)
