"""Acknowledged, idempotent publish on ``/ws/<session_id>``, through real sockets (memory broker).

Redis and two nodes: tests/brokers/test_redis_acks.py; the broker seam: test_broker_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

import tornado_ws
from tests.conftest import SECRET, Client, Clients, make_token
from tornado_ws.auth import Claims
from tornado_ws.hub import Hub
from tornado_ws.testing import HubServer, test_hub

pytestmark = pytest.mark.usefixtures("no_errors_logged")

SERVICE = make_token("billing", roles=["service"])


def msg(data: Any, message_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "message", "data": data}
    if message_id is not None:
        frame["id"] = message_id
    return frame


class Node:
    """One hub on a free port and the clients opened against it."""

    def __init__(self, **settings: Any) -> None:
        self.hub: Hub = test_hub(jwt_secret=SECRET, ping_interval=60, ping_timeout=30, **settings)
        self.server = HubServer(self.hub).start()
        self.clients = Clients(self.server.port)

    async def join(self, session: str = "room", sub: str = "alice", org: str = "acme", **claims: Any) -> Client:
        client, _ = await self.clients.join(session, sub, org, **claims)
        return client

    async def post(self, session: str, body: Any) -> tuple[int, Any]:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.server.port}/api/sessions/{session}/messages",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {SERVICE}"},
            raise_error=False,
        )
        return response.code, json.loads(response.body)

    async def close(self) -> None:
        await self.clients.close_all()
        await self.server.stop()
        await self.hub.aclose()


@pytest.fixture
def make_node(io_loop: IOLoop) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**settings: Any) -> Node:
        made.append(Node(**settings))
        return made[-1]

    yield make
    for node in made:
        io_loop.run_sync(node.close)


async def test_a_message_with_an_id_is_acked_with_its_seq_and_every_copy_carries_the_id(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    alice, bob = await node.join(sub="alice"), await node.join(sub="bob")
    await alice.send(msg({"text": "hi"}, "m-1"))
    copy = await alice.recv_type("message")
    assert (copy["seq"], copy["id"], copy["data"]) == (1, "m-1", {"text": "hi"})
    assert await alice.recv() == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1}
    theirs = await bob.recv_type("message")
    assert list(theirs) == ["type", "session_id", "user_id", "seq", "ts", "id", "data"]
    assert (theirs["seq"], theirs["id"]) == (1, "m-1")
    # Without an id nothing changes: no id field, no ack.
    await alice.send(msg("plain"))
    assert "id" not in await alice.recv_type("message")
    assert "id" not in await bob.recv_type("message")
    await alice.assert_silent()


async def test_a_bad_id_is_bad_frame_and_publishes_nothing(make_node: Callable[..., Node]) -> None:
    node = make_node()
    alice, bob = await node.join(sub="alice"), await node.join(sub="bob")
    await alice.recv_type("user_joined")
    for bad in ("", "x" * 65, "a b", "é", "a/b", 7, None, ["m"], {"id": "m"}):
        await alice.send({"type": "message", "data": "nope", "id": bad})
        error = await alice.recv()
        assert (error["type"], error["code"], "id" in error) == ("error", "bad_frame", False), bad
    await bob.assert_silent()
    await alice.send(msg("after", "ok"))
    assert (await bob.recv_type("message"))["seq"] == 1  # nothing was sequenced before it


async def test_a_resend_is_acked_as_a_duplicate_and_sent_to_nobody(make_node: Callable[..., Node]) -> None:
    node = make_node()
    alice, bob = await node.join(sub="alice"), await node.join(sub="bob")
    await alice.send(msg("once", "m-1"))
    assert (await alice.recv_type("ack"))["seq"] == 1
    first = await bob.recv_type("message")
    assert (first["seq"], first["user_id"], first["data"]) == (1, "alice", "once")
    await alice.send(msg("once", "m-1"))  # the same connection
    assert await alice.recv() == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1, "duplicate": True}
    await alice.close()
    again = await node.join(sub="alice")  # a reconnect: a new connection of the same user
    await again.send(msg("once", "m-1"))
    assert await again.recv_type("ack") == {
        "type": "ack",
        "session_id": "room",
        "id": "m-1",
        "seq": 1,
        "duplicate": True,
    }
    # The same id from another user, in another session or another org is another message.
    await bob.send(msg("bob's", "m-1"))
    assert (await bob.recv_type("message"))["seq"] == 2  # not alice's resends: nobody got those
    assert await bob.recv_type("ack") == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 2}
    for session, org in (("room2", "acme"), ("room", "globex")):
        other = await node.join(session, "alice", org)
        await other.send(msg("elsewhere", "m-1"))
        assert await other.recv_type("ack") == {"type": "ack", "session_id": session, "id": "m-1", "seq": 1}
    await bob.assert_silent()


async def test_errors_about_a_message_carry_its_id(make_node: Callable[..., Node]) -> None:
    def no_links(claims: Claims, session_id: str, data: Any) -> Any:
        if data == "http://spam":
            raise tornado_ws.Reject("no_links", "links are not allowed")
        return None

    node = make_node(rate_limit=0.01, rate_burst=2, on_message=no_links)
    alice = await node.join(sub="alice")
    await alice.send(msg("http://spam", "h-1"))
    assert await alice.recv() == {"type": "error", "code": "no_links", "message": "links are not allowed", "id": "h-1"}
    await alice.send(msg("fine", "ok-1"))
    assert (await alice.recv_type("ack"))["id"] == "ok-1"
    await alice.send(msg("too many", "r-3"))  # the burst of 2 is spent
    error = await alice.recv()
    assert (error["code"], error["id"]) == ("rate_limited", "r-3")
    await alice.send(msg("too many"))
    assert "id" not in await alice.recv()
    viewer = await node.join(sub="vic", roles=["viewer"])
    await viewer.send(msg("may I?", "v-1"))
    error = await viewer.recv()
    assert (error["code"], error["id"]) == ("forbidden", "v-1")


async def test_the_api_idempotency_key_publishes_once(make_node: Callable[..., Node]) -> None:
    node = make_node()
    alice = await node.join(sub="alice")
    body = {"data": {"kind": "invoice-paid"}, "idempotency_key": "invoice-42"}
    assert await node.post("room", body) == (200, {"seq": 1})
    assert await node.post("room", body) == (200, {"seq": 1, "duplicate": True})
    frame = await alice.recv_type("message")
    assert (frame["seq"], frame["user_id"], frame["id"]) == (1, "billing", "invoice-42")
    for bad in ("", "no spaces", "k" * 65, None, 42):
        code, answer = await node.post("room", {"data": 1, "idempotency_key": bad})
        assert (code, answer["error"]["code"]) == (400, "bad_request"), bad
    assert await node.post("room", {"data": "plain"}) == (200, {"seq": 2})
    # Hub.publish takes the same key, in the same space: the caller's user id.
    assert await node.hub.publish("acme", "room", "x", user_id="billing", idempotency_key="invoice-42") == 1
    assert await node.hub.publish("acme", "room", "x", user_id="billing", idempotency_key="hub-1") == 3
    assert await node.hub.publish("acme", "room", "x", user_id="billing", idempotency_key="hub-1") == 3
    with pytest.raises(ValueError, match="idempotency_key"):
        await node.hub.publish("acme", "room", "x", user_id="billing", idempotency_key="not ok")
    seen = [await alice.recv_type("message") for _ in range(2)]
    assert [(f["seq"], f.get("id")) for f in seen] == [(2, None), (3, "hub-1")]
    await alice.assert_silent()


def test_the_window_follows_history_ttl_unless_given() -> None:
    assert test_hub(history_ttl=42).registry.idempotency_window == 42
    assert test_hub(history_ttl=42, idempotency_window=5).registry.idempotency_window == 5
    assert test_hub(history_ttl=42, idempotency_window=0).registry.idempotency_window == 0
