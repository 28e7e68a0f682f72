"""Attacks on ``/ws``, one connection in many sessions: naming sessions one is not in, other
tenants' sessions, ids no session can have, and memberships that outlive their right to exist.
Each runs while the canary session keeps talking."""

from __future__ import annotations

import json

from tests.canary import Canary
from tests.conftest import Clients, make_token


async def test_a_socket_reaches_only_the_sessions_it_joined_and_never_another_org(clients: Clients) -> None:
    canary = await Canary.open(clients)
    alice = await clients.mux("alice", "acme")
    await alice.join("room")
    mallory = await clients.mux("mallory", "evil")
    async with canary.throughout():
        await mallory.join("room")  # the same id in another org: another session
        # Naming a session the socket never joined (acme's canary, say) publishes nowhere.
        for target in ("canary", "elsewhere"):
            await mallory.publish_in(target, "intrusion", "x-1")
            refused = await mallory.recv()
            assert (refused["code"], refused["session_id"], refused["id"]) == ("not_joined", target, "x-1")
        await mallory.publish_in("room", "evil's own room")
        assert (await mallory.recv_in("room", "message"))["data"] == "evil's own room"
        await mallory.send({"type": "leave", "session": "canary"})
        assert (await mallory.recv())["code"] == "not_joined"
    await alice.assert_silent()  # nothing of evil's room, no user_joined from another org


async def test_hostile_session_names_are_refused_without_breaking_the_socket(clients: Clients) -> None:
    canary = await Canary.open(clients)
    alice = await clients.mux("alice")
    async with canary.throughout():
        for name in ("", "a/b", "../canary", "x" * 129, "room\u0000", "\u202eroom", "%63anary"):
            left = await alice.refused(name)
            assert (left["session_id"], left["code"]) == (name, 1008)
        # A lone surrogate cannot even be repeated in a frame: bad_frame, nothing joined.
        await alice.send('{"type":"join","session":"\\ud800"}')
        assert (await alice.recv())["code"] == "bad_frame"
        await alice.send(json.dumps({"type": "join", "session": ["canary"]}))
        assert (await alice.recv())["code"] == "bad_frame"
    await alice.join("fine")


async def test_a_session_field_on_the_single_session_endpoint_never_reaches_another_session(
    clients: Clients,
) -> None:
    canary = await Canary.open(clients)
    alice, _ = await clients.join("room", "alice")
    async with canary.throughout():
        await alice.send({"type": "message", "session": "canary", "data": "intrusion", "id": "x-1"})
        refused = await alice.recv()
        assert (refused["code"], refused["id"]) == ("not_joined", "x-1")
        await alice.send({"type": "message", "session": "room", "data": "mine"})
        assert (await alice.recv_type("message"))["data"] == "mine"


async def test_a_viewer_on_ws_may_join_and_read_but_never_publish(clients: Clients) -> None:
    canary = await Canary.open(clients)
    alice = await clients.mux("alice")
    await alice.join("room")
    viewer = await clients.mux("vera", token=make_token("vera", roles=["viewer"]))
    await viewer.join("room")
    async with canary.throughout():
        for _ in range(5):
            await viewer.publish_in("room", "spoof")
            assert (await viewer.recv())["code"] == "forbidden"
    await alice.publish_in("room", "real")
    assert (await viewer.recv_in("room", "message"))["data"] == "real"
