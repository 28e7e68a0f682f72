"""Acks and duplicate detection across two nodes over one real Redis, through real sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer
from tests.brokers.test_redis_caps import SERVICE, Cluster

pytestmark = pytest.mark.usefixtures("no_errors_logged")


@pytest.fixture
def cluster(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[Cluster]:
    made = Cluster(redis_server)
    yield made
    io_loop.run_sync(made.close)


async def test_a_resend_on_the_other_node_is_a_duplicate_with_the_first_nodes_seq(cluster: Cluster) -> None:
    alice, _ = await cluster.join(0, "room", "alice")
    bob, _ = await cluster.join(1, "room", "bob")
    await alice.send({"type": "message", "data": "once", "id": "m-1"})
    assert await alice.recv_type("ack") == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1}
    copy = await bob.recv_type("message")
    assert (copy["seq"], copy["user_id"], copy["id"], copy["data"]) == (1, "alice", "m-1", "once")
    await alice.close()
    # The connection dropped before the ack, say: the client resends on whichever node it reaches.
    again, _ = await cluster.join(1, "room", "alice")
    await again.send({"type": "message", "data": "once", "id": "m-1"})
    duplicate = await again.recv_type("ack")
    assert duplicate == {"type": "ack", "session_id": "room", "id": "m-1", "seq": 1, "duplicate": True}
    # The same key through the HTTP API of each node: published by the first, a duplicate on the second.
    body = {"data": "from billing", "idempotency_key": "invoice-42"}
    assert await cluster.http(0, "POST", "/api/sessions/room/messages", SERVICE, body) == (200, {"seq": 2})
    assert await cluster.http(1, "POST", "/api/sessions/room/messages", SERVICE, body) == (
        200,
        {"seq": 2, "duplicate": True},
    )
    await again.send({"type": "message", "data": "marker"})
    seen = [await bob.recv_type("message") for _ in range(2)]
    assert [(f["seq"], f["user_id"], f.get("id")) for f in seen] == [(2, "billing", "invoice-42"), (3, "alice", None)]
    await bob.assert_silent()
