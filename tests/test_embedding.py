"""tornado_ws.Hub inside an application: the in-process API, hooks and authorization.

Uses the project's own test plugin (``-p tornado_ws.testing``): ``tornado_ws_hub`` is
overridden per test to install hooks, ``tornado_ws_connect`` gives connected clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import tornado_ws
from tornado_ws.auth import Claims
from tornado_ws.client import SessionClosed
from tornado_ws.config import Config
from tornado_ws.testing import DEFAULT_SECRET, HubServer, test_hub


async def next_message(client: Any) -> dict[str, Any]:
    while (frame := await client.recv(timeout=5))["type"] != "message":
        pass
    return frame


# -- the in-process API ----------------------------------------------------------------------


def test_constructor_takes_cli_options_in_snake_case() -> None:
    hub = tornado_ws.Hub(jwt_secret="s" * 32, history_size=7, rate_limit=5, max_connections_per_user=3)
    assert (hub.config.history_size, hub.config.rate_limit, hub.config.max_connections_per_user) == (7, 5, 3)
    again = tornado_ws.Hub(Config(jwt_secret="s" * 32), history_ttl=9)
    assert again.config.history_ttl == 9
    with pytest.raises(tornado_ws.ConfigError):
        tornado_ws.Hub()


async def test_publish_from_the_app_is_sequenced_with_client_messages(
    tornado_ws_connect: Any, tornado_ws_hub: Any
) -> None:
    alice = await tornado_ws_connect("room1")
    await alice.send("from alice")
    assert (await next_message(alice))["seq"] == 1
    seq = await tornado_ws_hub.publish("acme", "room1", {"kind": "invoice-paid"}, user_id="billing")
    assert seq == 2
    frame = await next_message(alice)
    assert (frame["seq"], frame["user_id"], frame["data"]) == (2, "billing", {"kind": "invoice-paid"})
    # It is history like any other message: a resume from seq 1 replays it.
    late = await tornado_ws_connect("room1", "bob")
    assert late.welcome is not None and late.welcome["seq"] == 2


async def test_publish_presence_kick_stay_in_their_org(tornado_ws_connect: Any, tornado_ws_hub: Any) -> None:
    alice = await tornado_ws_connect("room1", "alice", "acme", name="Alice")
    eve = await tornado_ws_connect("room1", "eve", "globex")
    await tornado_ws_hub.publish("globex", "room1", "for globex", user_id="svc")
    assert (await next_message(eve))["data"] == "for globex"
    assert tornado_ws_hub.presence("acme", "room1") == {
        "participants": [{"user_id": "alice", "name": "Alice"}],
        "participant_count": 1,
    }
    assert await tornado_ws_hub.kick("globex", "room1", "alice") == 0
    assert await tornado_ws_hub.kick("acme", "room1", "alice") == 1
    with pytest.raises(SessionClosed) as info:
        await next_message(alice)
    assert info.value.code == 4003
    with pytest.raises(ValueError):
        await tornado_ws_hub.publish("acme", "bad id", 1, user_id="svc")
    with pytest.raises(ValueError):
        await tornado_ws_hub.publish("acme", "room1", float("nan"), user_id="svc")


async def test_routes_mount_under_a_prefix(io_loop: Any) -> None:
    server = HubServer(test_hub(), prefix="/rt").start()
    try:
        client = await server.connect("room")
        assert client.welcome is not None and client.welcome["session_id"] == "room"
        assert server.url.endswith("/rt")
    finally:
        await server.stop()


# -- authorize ------------------------------------------------------------------------------


class TestAuthorize:
    @pytest.fixture
    def tornado_ws_hub(self) -> tornado_ws.Hub:
        async def authorize(claims: Claims, session_id: str) -> bool:
            await asyncio.sleep(0)  # async hooks are awaited
            if claims.user_id == "broken":
                raise RuntimeError("database down")
            return session_id.startswith(claims.user_id + "-") or session_id == "lobby"

        return test_hub(authorize=authorize)

    async def test_allowed_and_refused_joins(self, tornado_ws_connect: Any) -> None:
        lobby = await tornado_ws_connect("lobby", "bob")
        await tornado_ws_connect("alice-notes", "alice")
        with pytest.raises(SessionClosed) as info:
            await tornado_ws_connect("lobby-x", "alice")
        assert info.value.code == 4004
        with pytest.raises(SessionClosed) as info:  # 1011 is retryable: the client tries, then gives up
            await tornado_ws_connect("lobby", "broken")
        assert "(1011): authorization failed" in info.value.reason
        await tornado_ws_connect("lobby", "carol")
        joined = await lobby.recv(timeout=5)  # carol; nothing was broadcast for the refused ones
        assert (joined["type"], joined["user_id"]) == ("user_joined", "carol")


# -- on_message ----------------------------------------------------------------------------------


def on_message(claims: Claims, session_id: str, data: Any) -> Any:
    if data == "crash":
        raise RuntimeError("bug in the app")
    if isinstance(data, str) and len(data) > 10:
        raise tornado_ws.Reject("too_long", "messages are at most 10 characters here")
    if data == "as is":
        return None  # None means unchanged
    return {"text": data, "checked_by": "app"}


class TestOnMessage:
    @pytest.fixture
    def tornado_ws_hub(self) -> tornado_ws.Hub:
        return test_hub(on_message=on_message)

    async def test_transform_reject_and_failures(self, tornado_ws_connect: Any) -> None:
        alice = await tornado_ws_connect("room", "alice")
        bob = await tornado_ws_connect("room", "bob")
        await alice.send("hi")
        frame = await next_message(bob)
        assert (frame["seq"], frame["data"]) == (1, {"text": "hi", "checked_by": "app"})
        await alice.send("far too long for the app")
        while (error := await alice.recv(timeout=5))["type"] != "error":
            pass
        assert (error["code"], error["message"]) == ("too_long", "messages are at most 10 characters here")
        await alice.send("crash")
        while (error := await alice.recv(timeout=5))["type"] != "error":
            pass
        assert error["code"] == "internal"
        await alice.send("as is")
        frame = await next_message(bob)
        assert (frame["seq"], frame["data"]) == (2, "as is")  # nothing else reached bob in between


# -- on_join / on_leave ---------------------------------------------------------------------------


class TestObservers:
    events: list[tuple[str, str, str]]
    left: asyncio.Event

    @pytest.fixture
    def tornado_ws_hub(self) -> tornado_ws.Hub:
        events = self.events = []
        left = self.left = asyncio.Event()

        def on_join(claims: Claims, session_id: str) -> None:
            events.append(("join", claims.user_id, session_id))
            if claims.user_id == "grumpy":
                raise RuntimeError("hook bug")

        async def on_leave(claims: Claims, session_id: str) -> None:
            events.append(("leave", claims.user_id, session_id))
            left.set()
            raise RuntimeError("hook bug")

        return test_hub(on_join=on_join, on_leave=on_leave)

    async def test_hooks_run_and_their_errors_are_only_logged(
        self, tornado_ws_connect: Any, tornado_ws_hub: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.ERROR, "tornado_ws")
        grumpy = await tornado_ws_connect("room", "grumpy")
        await grumpy.send("still alive")
        assert (await next_message(grumpy))["data"] == "still alive"
        await grumpy.close()
        await asyncio.wait_for(self.left.wait(), 5)
        assert self.events == [("join", "grumpy", "room"), ("leave", "grumpy", "room")]
        assert "on_join hook failed" in caplog.text and "on_leave hook failed" in caplog.text


# -- authorization without code -----------------------------------------------------------------


async def test_sessions_claim_globs_limit_what_a_token_may_join(tornado_ws_connect: Any) -> None:
    patterns = ["project-42-*", "lobby"]
    await tornado_ws_connect("project-42-design", sessions=patterns)
    await tornado_ws_connect("lobby", "bob", sessions=patterns)
    for session in ("project-43-design", "project-42", "lobby2"):
        with pytest.raises(SessionClosed) as info:
            await tornado_ws_connect(session, "carol", sessions=patterns)
        assert info.value.code == 4004
    with pytest.raises(SessionClosed):
        await tornado_ws_connect("anything", "dave", sessions=[])


async def test_viewer_receives_but_cannot_send(tornado_ws_connect: Any) -> None:
    viewer = await tornado_ws_connect("room", "watcher", roles=["viewer"])
    speaker = await tornado_ws_connect("room", "speaker")
    await viewer.send("let me talk")
    while (error := await viewer.recv(timeout=5))["type"] != "error":
        pass
    assert error["code"] == "forbidden"
    await speaker.send("hello viewers")
    assert (await next_message(viewer))["data"] == "hello viewers"
    assert viewer.connected


def test_default_secret_is_long_enough_for_hs512() -> None:
    assert len(DEFAULT_SECRET) >= 64


async def test_each_hub_serves_a_handler_bound_to_its_own_session_map(io_loop: Any) -> None:
    """The handler's class-level session map is the real registry of the hub that serves it."""
    from tornado_ws.web.handler import SessionHandler

    first = HubServer(test_hub()).start()
    second = HubServer(test_hub()).start()
    try:
        assert first.hub.handler_class.registry is first.hub.registry
        assert second.hub.handler_class.registry is second.hub.registry is SessionHandler.registry
        await first.connect("room", "alice")
        assert (first.hub.registry.connection_count, second.hub.registry.connection_count) == (1, 0)
    finally:
        await first.stop()
        await second.stop()
