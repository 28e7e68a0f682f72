"""Several nodes over one real Redis: same members, same order, same resume, and the faults."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import IOLoop

from tests.brokers.redis_server import RedisServer, free_port, require_redis_server, stop_nodes
from tests.conftest import SECRET, Client, ServerProcess, make_token
from tornado_ws.brokers.redis import HEARTBEAT, PRESENCE_TTL
from tornado_ws.client import connect
from tornado_ws.testing import TEST_BACKOFF, HubServer, test_hub


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer(persistent=True).start()
    yield server
    server.cleanup()


class Cluster:
    """Two tornado-ws nodes in this process, each with its own RedisBroker, one Redis."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.nodes = [HubServer(test_hub(jwt_secret=SECRET, broker=redis.url)).start() for _ in range(2)]
        self.sockets: list[Client] = []

    async def join(self, node: int, session: str, sub: str, org: str = "acme", **query: Any) -> tuple[Client, dict]:
        url = f"ws://127.0.0.1:{self.nodes[node].port}/ws/{session}?token={make_token(sub, org)}"
        if query:
            url += "&" + "&".join(f"{k}={v}" for k, v in query.items())
        client = Client(await websockets.connect(url, max_queue=None))
        self.sockets.append(client)
        welcome = await client.recv()
        assert welcome["type"] == "welcome", welcome
        return client, welcome

    async def http(self, node: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.nodes[node].port}{path}"
        payload = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        try:
            response = await AsyncHTTPClient().fetch(
                url, method=method, body=payload, headers={"Authorization": f"Bearer {token}"}
            )
        except HTTPClientError as exc:
            assert exc.response is not None
            response = exc.response
        return response.code, json.loads(response.body)

    async def close(self) -> None:
        for client in self.sockets:
            await client.close()
        await stop_nodes(self.nodes)


@pytest.fixture
def cluster(redis_server: RedisServer, io_loop: IOLoop) -> Iterator[Cluster]:
    nodes = Cluster(redis_server)
    yield nodes
    io_loop.run_sync(nodes.close)


async def until_message(client: Client, predicate: Any = None, timeout: float = 10) -> dict[str, Any]:
    while True:
        frame = await client.recv(timeout)
        if frame["type"] == "message" and (predicate is None or predicate(frame)):
            return frame


async def test_clients_on_two_nodes_see_one_identical_gapless_order(cluster: Cluster) -> None:
    senders = [(await cluster.join(i % 2, "room", f"sender{i}"))[0] for i in range(3)]
    readers = [(await cluster.join(i % 2, "room", f"reader{i}"))[0] for i in range(4)]
    per_sender = 40

    async def send_all(i: int, client: Client) -> None:
        for n in range(per_sender):
            await client.publish([i, n])

    async def read_all(client: Client) -> list[tuple[int, int, int]]:
        got = []
        while len(got) < 3 * per_sender:
            frame = await until_message(client)
            got.append((frame["seq"], *frame["data"]))
        return got

    reading = [asyncio.ensure_future(read_all(c)) for c in senders + readers]
    await asyncio.gather(*(send_all(i, c) for i, c in enumerate(senders)))
    orders = await asyncio.wait_for(asyncio.gather(*reading), 30)
    assert [seq for seq, _, _ in orders[0]] == list(range(1, 3 * per_sender + 1))
    assert all(order == orders[0] for order in orders)
    for i in range(3):
        assert [n for _, s, n in orders[0] if s == i] == list(range(per_sender))


async def test_presence_and_events_span_nodes(cluster: Cluster) -> None:
    alice, _ = await cluster.join(0, "room", "alice")
    _, welcome = await cluster.join(1, "room", "bob")
    assert {p["user_id"] for p in welcome["participants"]} == {"alice", "bob"}
    joined = await alice.recv()
    assert (joined["type"], joined["user_id"], joined["participant_count"]) == ("user_joined", "bob", 2)
    code, body = await cluster.http(1, "GET", "/api/sessions/room/presence", make_token("viewer", "acme"))
    assert (code, body["participant_count"]) == (200, 2)
    _, eve_welcome = await cluster.join(1, "room", "eve", "globex")
    assert eve_welcome["participant_count"] == 1


async def test_resume_on_the_other_node(cluster: Cluster) -> None:
    alice, welcome = await cluster.join(0, "room", "alice")
    pub, _ = await cluster.join(1, "room", "pub")
    for n in range(3):
        await pub.publish(n)
    assert (await until_message(alice, lambda f: f["seq"] == 3))["data"] == 2
    await alice.close()
    for n in range(3, 6):
        await pub.publish(n)
    await until_message(pub, lambda f: f["seq"] == 6)  # all three are sequenced
    back, rewelcome = await cluster.join(1, "room", "alice", since=3, epoch=welcome["epoch"])
    assert (rewelcome["recovered"], rewelcome["seq"]) == (True, 6)
    assert [(await until_message(back))["seq"] for _ in range(3)] == [4, 5, 6]


async def test_api_publish_and_kick_work_across_nodes(cluster: Cluster) -> None:
    mallory, _ = await cluster.join(0, "room", "mallory")
    bob, _ = await cluster.join(1, "room", "bob")
    service = make_token("billing", "acme", roles=["service"])
    code, body = await cluster.http(1, "POST", "/api/sessions/room/messages", service, {"data": "paid"})
    assert (code, body) == (200, {"seq": 1})
    assert (await until_message(mallory))["user_id"] == "billing"
    code, body = await cluster.http(1, "DELETE", "/api/sessions/room/users/mallory", make_token("ops", roles=["admin"]))
    assert (code, body["connections_closed"]) == (200, 1)
    assert await mallory.closed_with() == (4003, "kicked")
    while (frame := await bob.recv())["type"] != "user_left":
        pass
    assert frame["user_id"] == "mallory"


async def test_redis_outage_is_reported_and_healed_without_restarts(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    a, _ = await cluster.join(0, "room", "alice")
    b, _ = await cluster.join(1, "room", "bob")
    await a.publish("before")
    assert (await until_message(b))["data"] == "before"
    redis_server.stop()
    await a.publish("during")
    error = await a.recv_type("error")
    assert (error["type"], error["code"]) == ("error", "unavailable")
    code, body = await cluster.http(0, "GET", "/readyz", "")
    assert (code, body["status"]) == (503, "broker_unavailable")
    assert a.ws.state is websockets.protocol.State.OPEN and b.ws.state is websockets.protocol.State.OPEN
    url = f"ws://127.0.0.1:{cluster.nodes[0].port}/ws/room?token={make_token('carol', 'acme')}"
    late = Client(await websockets.connect(url, max_queue=None))  # a newcomer cannot join meanwhile
    cluster.sockets.append(late)
    assert await late.closed_with(timeout=10) == (1013, "unavailable; try again later")
    redis_server.start()  # same port, same data (AOF): the stream continues
    for node in cluster.nodes:
        await asyncio.wait_for(node.hub.broker.connected.wait(), 10)  # type: ignore[attr-defined]
    await a.publish("after")
    frame = await until_message(b, lambda f: f["data"] == "after")
    assert frame["seq"] == 2
    code, body = await cluster.http(1, "GET", "/readyz", "")
    assert (code, body["status"]) == (200, "ready")


async def test_redis_that_lost_its_data_makes_members_reload(cluster: Cluster, redis_server: RedisServer) -> None:
    port = cluster.nodes[0].port
    client = await connect(f"ws://127.0.0.1:{port}", make_token("alice"), "room", backoff=TEST_BACKOFF)
    try:
        await client.send("one")
        assert (await client.recv(timeout=5))["seq"] == 1
        redis_server.stop()
        for path in redis_server.dir.rglob("*"):
            if path.is_file():
                path.unlink()
        redis_server.start()  # empty: counters and epoch are gone
        welcome = await client.recv(timeout=15)  # closed 1012 by the node, reconnected by the client
        assert welcome["type"] == "welcome" and welcome["recovered"] is False
        assert welcome["epoch"] != client.welcome["epoch"] or welcome["seq"] == 0
    finally:
        await client.close()


def test_a_killed_node_leaves_presence_within_the_bound(redis_server: RedisServer, io_loop: IOLoop) -> None:
    doomed = ServerProcess(["--jwt-secret", SECRET, "--broker", redis_server.url])
    survivor = HubServer(test_hub(jwt_secret=SECRET, broker=redis_server.url)).start()

    async def scenario() -> float:
        watcher = await survivor.connect("room", "watcher")
        url = f"ws://127.0.0.1:{doomed.port}/ws/room?token={make_token('ghost')}"
        ghost = await websockets.connect(url, max_queue=None)
        try:
            while (await watcher.recv(timeout=5))["type"] != "user_joined":
                pass
            doomed.proc.send_signal(signal.SIGKILL)
            started = asyncio.get_running_loop().time()
            frame = await watcher.recv(timeout=PRESENCE_TTL + 4 * HEARTBEAT + 5)
            assert (frame["type"], frame["user_id"], frame["participant_count"]) == ("user_left", "ghost", 1)
            return asyncio.get_running_loop().time() - started
        finally:
            ghost.transport.abort()
            await survivor.stop()
            await survivor.hub.aclose()

    try:
        elapsed = io_loop.run_sync(scenario, timeout=30)
    finally:
        doomed.proc.wait(10)
        doomed.stop()
        doomed.log_path.unlink(missing_ok=True)
    assert elapsed <= PRESENCE_TTL + 2 * HEARTBEAT + 1


def test_workers_share_sessions_over_redis(redis_server: RedisServer, io_loop: IOLoop) -> None:
    server = ServerProcess(["--jwt-secret", SECRET, "--broker", redis_server.url, "--workers", "2"])

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{server.port}"
        clients = [await connect(url, make_token(f"user{i}"), "room", backoff=TEST_BACKOFF) for i in range(6)]
        try:
            await clients[0].send("hello workers")
            for client in clients:
                while (frame := await client.recv(timeout=10))["type"] != "message":
                    pass
                assert (frame["seq"], frame["data"]) == (1, "hello workers")
        finally:
            for client in clients:
                await client.close()

    try:
        io_loop.run_sync(scenario, timeout=30)
    finally:
        assert server.stop() == 0
        server.log_path.unlink(missing_ok=True)


def test_redis_unreachable_at_start_is_one_clear_line_and_readyz_503_at_once() -> None:
    """Not one line per retry, and no probe waits for the subscription timeout; no password logged."""
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    server = ServerProcess(["--jwt-secret", SECRET, "--broker", url])
    try:
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
        assert info.value.code == 503 and json.loads(info.value.read()) == {"status": "broker_unavailable"}
        assert time.monotonic() - started < 2.0  # SUBSCRIBE_TIMEOUT (3 s) is not waited for
        deadline = time.monotonic() + 5
        while "redis unreachable" not in server.output():  # the log file is the only signal here
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        time.sleep(1.0)  # several retries later...
    finally:
        server.stop()
    output = server.output()
    assert output.count("redis unreachable") == 1, output  # ...still one line
    assert "hunter2" not in output and ":[redacted]@127.0.0.1" in output
    server.log_path.unlink(missing_ok=True)
