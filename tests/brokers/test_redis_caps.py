"""Caps and bans hold across two nodes over one real Redis, through real sockets.

Each attack runs in the canary pattern of the attack catalogue (tests/security/, tests/canary.py):
a canary session of another org keeps talking across the two nodes, and no ERROR may be logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import GARBAGE, RedisServer, stop_nodes
from tests.canary import Canary
from tests.conftest import SECRET, Client, Clients, make_token
from tests.tokens import HOSTILE_TEXT, hostile_token
from tornado_ws.brokers.redis_scripts import SessionKeys
from tornado_ws.core.registry import SessionKey
from tornado_ws.testing import HubServer, test_hub

pytestmark = pytest.mark.usefixtures("no_errors_logged")

ADMIN = make_token("ops", roles=["admin"])
SERVICE = make_token("billing", roles=["service"])


class Cluster:
    """Two nodes in this process, each with its own RedisBroker and these settings."""

    def __init__(self, redis: RedisServer, **settings: Any) -> None:
        redis.flush()
        hubs = [test_hub(jwt_secret=SECRET, broker=redis.url, ping_interval=60, ping_timeout=30, **settings)]
        hubs.append(test_hub(jwt_secret=SECRET, broker=redis.url, ping_interval=60, ping_timeout=30, **settings))
        self.nodes = [HubServer(hub).start() for hub in hubs]
        self.clients = [Clients(node.port) for node in self.nodes]

    async def join(self, node: int, session: str, sub: str, org: str = "acme") -> tuple[Client, dict[str, Any]]:
        return await self.clients[node].join(session, sub, org)

    async def refusal(self, node: int, session: str, sub: str, org: str = "acme") -> tuple[int | None, str]:
        client = await self.clients[node].connect(session, make_token(sub, org))
        return await client.closed_with()

    async def join_once_allowed(self, node: int, session: str, sub: str, timeout: float = 8.0) -> Client:
        """Reconnect until welcomed: a bounded poll on real joins, for a refusal that expires in Redis."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            client = await self.clients[node].connect(session, make_token(sub))
            try:
                frame = await client.recv()
                assert frame["type"] == "welcome", frame
                return client
            except websockets.ConnectionClosed:
                assert loop.time() < deadline, f"still refused: {await client.closed_with()}"
                await asyncio.sleep(0.1)

    async def http(self, node: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.nodes[node].port}{path}",
            method=method,
            body=payload,
            headers={"Authorization": f"Bearer {token}"},
            raise_error=False,
        )
        return response.code, json.loads(response.body)

    async def canary(self) -> Canary:
        """The canary's two members on the two nodes, in an org no test caps."""
        members = []
        for node, sub in ((0, "canary-a"), (1, "canary-b")):
            client, _ = await self.join(node, Canary.SESSION, sub, "canary-org")
            members.append(client)
        assert (await members[0].recv())["type"] == "user_joined"
        canary = Canary(*members)
        await canary.exchange()
        return canary

    async def close(self) -> None:
        for pool in self.clients:
            await pool.close_all()
        await stop_nodes(self.nodes)


@pytest.fixture
def make_cluster(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(**settings)``: two nodes with those settings, stopped at teardown."""
    made: list[Cluster] = []

    def make(**settings: Any) -> Cluster:
        made.append(Cluster(redis_server, **settings))
        return made[-1]

    yield make
    for cluster in made:
        io_loop.run_sync(cluster.close)


async def test_a_users_connections_are_capped_across_nodes(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(max_connections_per_user=2)
    canary = await cluster.canary()
    async with canary.throughout():
        first, _ = await cluster.join(0, "s0", "alice")
        await cluster.join(1, "s1", "alice")
        for node in (0, 1):
            assert await cluster.refusal(node, "s2", "alice") == (1013, "too many connections for this user")
        await cluster.join(1, "s2", "bob")  # other users are unaffected
        await cluster.join(0, "s2", "alice", "globex")  # and so is the same user id in another org
        await first.close()
        await cluster.join_once_allowed(1, "s2", "alice")  # the leave frees a place, on any node


async def test_an_orgs_sessions_are_capped_across_nodes_until_they_expire(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(max_sessions_per_org=3, history_ttl=2)
    canary = await cluster.canary()
    async with canary.throughout():
        members = [(await cluster.join(n % 2, f"s{n}", f"u{n}"))[0] for n in range(3)]
        for node in (0, 1):
            assert await cluster.refusal(node, "s3", "v") == (1013, "too many sessions in this organization")
            code, body = await cluster.http(node, "POST", "/api/sessions/s3/messages", SERVICE, {"data": 1})
            assert (code, body["error"]["code"]) == (429, "too_many_sessions")
        code, body = await cluster.http(1, "POST", "/api/sessions/s0/messages", SERVICE, {"data": "ok"})
        assert (code, body) == (200, {"seq": 1})  # existing sessions still take messages...
        v, welcome = await cluster.join(1, "s0", "v")  # ... and members
        assert welcome["seq"] == 1
        _, welcome = await cluster.join(0, "s3", "eve", "globex")  # other orgs are unaffected
        assert welcome["participant_count"] == 1
        for member in [*members, v]:
            await member.close()
        # Emptied sessions count until their history expires (--history-ttl), then make room.
        assert await cluster.refusal(0, "s3", "v") == (1013, "too many sessions in this organization")
        await cluster.join_once_allowed(1, "s3", "v", timeout=10)


async def test_a_kick_with_a_ban_holds_on_every_node_until_it_ends(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    canary = await cluster.canary()
    async with canary.throughout():
        mallory, _ = await cluster.join(0, "room", "mallory")
        bob, _ = await cluster.join(0, "room", "bob")
        code, body = await cluster.http(1, "DELETE", "/api/sessions/room/users/mallory?ban_seconds=2", ADMIN)
        assert (code, body["connections_closed"]) == (200, 1)
        assert await mallory.closed_with() == (4003, "kicked")
        for node in (0, 1):
            assert await cluster.refusal(node, "room", "mallory") == (4003, "banned")
        _, welcome = await cluster.join(1, "room", "carol")  # others still join
        assert {p["user_id"] for p in welcome["participants"]} == {"bob", "carol"}
        await cluster.join(1, "elsewhere", "mallory")  # the ban is for that session only
        back = await cluster.join_once_allowed(1, "room", "mallory")
        await back.close()
        code, _ = await cluster.http(0, "DELETE", "/api/sessions/room/users/bob", ADMIN)
        assert code == 200 and await bob.closed_with() == (4003, "kicked")
        _, welcome = await cluster.join(1, "room", "bob")  # a kick without ban_seconds is no ban
        assert welcome["type"] == "welcome"


async def test_garbage_in_the_presence_hash_never_blocks_a_session(
    make_cluster: Callable[..., Cluster], redis_server: RedisServer
) -> None:
    cluster = make_cluster()
    canary = await cluster.canary()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await raw.hset(SessionKeys.of(SessionKey("acme", "room")).presence, mapping=GARBAGE)
        async with canary.throughout():
            alice, welcome = await cluster.join(0, "room", "alice")
            assert welcome["participants"] == [{"user_id": "alice"}]
            _, welcome = await cluster.join(1, "room", "bob")
            assert welcome["participant_count"] == 2
            for node in (0, 1):
                code, body = await cluster.http(node, "GET", "/api/sessions/room/presence", make_token("viewer"))
                assert (code, body["participant_count"]) == (200, 2)
            assert (await alice.recv_type("user_joined"))["user_id"] == "bob"
    finally:
        await raw.aclose()


@pytest.mark.parametrize("claim", ["sub", "org", "name", "roles", "sessions"])
async def test_a_claim_no_frame_can_carry_changes_nothing_on_either_node(
    make_cluster: Callable[..., Cluster], redis_server: RedisServer, claim: str
) -> None:
    """The lone surrogate of a JavaScript issuer cutting a name: refused 1008 on both nodes, no
    presence entry written, and the session keeps taking members everywhere."""
    cluster = make_cluster()
    canary = await cluster.canary()
    bob, _ = await cluster.join(0, "standup", "bob")
    async with canary.throughout():
        token = hostile_token(claim, HOSTILE_TEXT["lone-surrogate"])
        for node in (0, 1):
            client = await cluster.clients[node].connect("standup", token)
            assert await client.closed_with() == (1008, f"invalid {claim} claim")
        _, welcome = await cluster.join(1, "standup", "carol")
        assert [p["user_id"] for p in welcome["participants"]] == ["bob", "carol"]
    assert (await bob.recv())["user_id"] == "carol"  # user_joined, and nothing before it
    direct = aioredis.Redis(port=redis_server.port)
    try:
        entries = await direct.hvals(SessionKeys.of(SessionKey("acme", "standup")).presence)
    finally:
        await direct.aclose()
    assert sorted(json.loads(raw)["u"] for raw in entries) == ["bob", "carol"]
