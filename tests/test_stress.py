"""Bounded churn: a thousand connect/disconnect cycles while publishing; nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import json
import resource

import websockets

from tests.conftest import Clients, make_token, wait_for, ws_url
from tornado_ws.core.registry import Registry, SessionKey
from tornado_ws.web.connection import Connection
from tornado_ws.web.handler import SessionHandler

CYCLES = 1000  # with the 15 s soak beside it; the suite has a 5-minute budget
WORKERS = 20
SESSIONS = 5


def rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def live_connections() -> int:
    gc.collect()
    assert not [obj for obj in gc.get_objects() if isinstance(obj, SessionHandler)]  # dropped after open()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Connection))


async def test_connect_disconnect_churn_with_publishing_leaks_nothing(
    clients: Clients, port: int, registry: Registry
) -> None:
    watchers = [(await clients.join(f"churn-{i}", "watcher"))[0] for i in range(SESSIONS)]
    publisher, _ = await clients.join("churn-0", "publisher")
    await watchers[0].recv_type("user_joined")
    baseline_rss, baseline_connections = rss_kib(), live_connections()
    tokens = [make_token(f"user{w}") for w in range(WORKERS)]
    done = asyncio.Event()

    async def churn(worker: int) -> None:
        for n in range(CYCLES // WORKERS):
            url = ws_url(port, f"churn-{(worker + n) % SESSIONS}", tokens[worker])
            async with websockets.connect(url, max_queue=None) as ws:
                assert json.loads(await ws.recv())["type"] == "welcome"

    async def publish() -> int:
        sent = 0
        while not done.is_set():
            await publisher.publish(sent)
            sent += 1
            await asyncio.sleep(0.002)
        return sent

    publishing = asyncio.ensure_future(publish())
    await asyncio.wait_for(asyncio.gather(*(churn(w) for w in range(WORKERS))), 60)
    done.set()
    sent = await publishing
    assert sent > 0

    # Every watcher's presence view, rebuilt from its events alone, ends where the registry is: just itself.
    await publisher.close()
    # A poll: the churners' closes are seen only by members who may have left already.
    await wait_for(lambda: registry.connection_count == SESSIONS, timeout=10)
    for i, watcher in enumerate(watchers):
        count = 2 if i == 0 else 1
        await watcher.send({"type": "ping"})
        while (frame := await watcher.recv())["type"] != "pong":
            if frame["type"] in ("user_joined", "user_left"):
                count = frame["participant_count"]
        assert count == 1
        assert registry.presence(SessionKey("acme", f"churn-{i}"))["participant_count"] == 1

    for watcher in watchers:
        await watcher.close()
    await wait_for(lambda: not registry.sessions, timeout=10)  # a poll: the last members, no user_left to await
    assert registry.connection_count == 0
    assert live_connections() <= baseline_connections - SESSIONS - 1
    assert rss_kib() - baseline_rss < 40_000, "process memory did not return near its start"
