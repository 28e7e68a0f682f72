"""Hubs for tests that run on either broker: one hub (memory) or two hubs over one real Redis.

The ``make_nodes`` fixture (tests/conftest.py) builds them, parametrized over both."""

from __future__ import annotations

import json
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from tests.brokers.redis_server import RedisServer, stop_nodes
from tests.conftest import SECRET, Client, Clients, MuxClient
from tornado_ws.hub import Hub
from tornado_ws.testing import HubServer, test_hub


class Nodes:
    """One hub (memory) or two hubs over one Redis; ``clients(i)`` opens clients on node i."""

    def __init__(self, redis: RedisServer | None, **settings: Any) -> None:
        base: dict[str, Any] = {"jwt_secret": SECRET, "ping_interval": 60, "ping_timeout": 30, **settings}
        if redis is None:
            self.hubs: list[Hub] = [test_hub(**base)]
        else:
            redis.flush()
            self.hubs = [test_hub(broker=redis.url, **base) for _ in range(2)]
        self.servers = [HubServer(hub).start() for hub in self.hubs]
        self.pools = [Clients(server.port) for server in self.servers]

    def clients(self, node: int) -> Clients:
        return self.pools[node % len(self.pools)]

    async def mux(self, node: int = 0, sub: str = "alice", **claims: Any) -> MuxClient:
        return await self.clients(node).mux(sub, **claims)

    async def single(self, node: int, session: str, sub: str, **claims: Any) -> Client:
        client, _ = await self.clients(node).join(session, sub, **claims)
        return client

    async def http(self, node: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        server = self.servers[node % len(self.servers)]
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {token}"},
            raise_error=False,
            allow_nonstandard_methods=True,
        )
        return response.code, json.loads(response.body)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close_all()
        await stop_nodes(self.servers)
