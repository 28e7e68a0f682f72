"""Authorization outside the join: the HTTP API and ``refresh`` apply the join's rules.

A token whose ``sessions`` claim (or an embedding app's ``authorize`` hook) keeps it out of a
session gets 4004 on the WebSocket; the same token must get 403 ``forbidden`` from every
session-scoped API route, and a ``refresh`` to such a token must take the connection out of
the session (4004). Every attack runs while the canary session keeps talking.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.canary import Canary
from tests.conftest import Clients, call, make_token
from tornado_ws.auth import Claims
from tornado_ws.testing import HubServer, test_hub

ROUTES = [
    ("POST", "/api/sessions/{}/messages", {"data": "intrusion"}),
    ("GET", "/api/sessions/{}/presence", None),
    ("DELETE", "/api/sessions/{}/users/alice", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["publish", "presence", "kick"])
@pytest.mark.parametrize("sessions", [["other-*"], []], ids=["other-sessions", "no-sessions"])
async def test_api_applies_the_sessions_claim(
    http_server_client: Any, clients: Clients, method: str, path: str, body: Any, sessions: list[str]
) -> None:
    canary = await Canary.open(clients)
    alice, _ = await clients.join("standup", "alice")
    token = make_token("ops", "acme", roles=["admin", "service"], sessions=sessions)
    async with canary.throughout():
        code, answer = await call(http_server_client, method, path.format("standup"), token, body)
    assert (code, answer["error"]["code"]) == (403, "forbidden")
    await alice.assert_silent()  # nothing published, nobody kicked


async def test_api_allows_what_the_sessions_claim_allows(http_server_client: Any, clients: Clients) -> None:
    alice, _ = await clients.join("project-7", "alice")
    token = make_token("ops", "acme", roles=["admin", "service"], sessions=["project-*"])
    code, answer = await call(http_server_client, "POST", "/api/sessions/project-7/messages", token, {"data": 1})
    assert (code, answer) == (200, {"seq": 1})
    assert (await alice.recv())["data"] == 1
    code, answer = await call(http_server_client, "GET", "/api/sessions/project-7/presence", token)
    assert (code, answer["participant_count"]) == (200, 1)


async def _fetch(url: str, method: str, token: str, body: Any) -> tuple[int, dict[str, Any]]:
    payload = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    try:
        response = await AsyncHTTPClient().fetch(
            url, method=method, headers={"Authorization": f"Bearer {token}"}, body=payload
        )
    except HTTPClientError as exc:
        assert exc.response is not None
        response = exc.response
    return response.code, json.loads(response.body)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["publish", "presence", "kick"])
async def test_api_applies_the_embedding_apps_authorize_hook(io_loop: Any, method: str, path: str, body: Any) -> None:
    async def authorize(claims: Claims, session_id: str) -> bool:
        if session_id == "broken":
            raise RuntimeError("database down")
        return session_id.startswith(claims.user_id + "-")

    server = HubServer(test_hub(authorize=authorize)).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        token = server.token("ops", "acme", roles=["admin", "service"])
        alice = await server.connect("ops-room", "ops")
        code, answer = await _fetch(base + path.format("alice-room"), method, token, body)
        assert (code, answer["error"]["code"]) == (403, "forbidden")
        code, answer = await _fetch(base + path.format("ops-room"), method, token, body)
        assert code == 200, answer
        if method == "POST":
            assert (await alice.recv(timeout=5))["data"] == "intrusion"
    finally:
        await server.stop()


async def test_api_answers_500_without_a_traceback_when_the_hook_fails(
    io_loop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def authorize(claims: Claims, session_id: str) -> bool:
        raise RuntimeError("database down")

    server = HubServer(test_hub(authorize=authorize)).start()
    try:
        token = server.token("ops", "acme", roles=["service"])
        code, answer = await _fetch(
            f"http://127.0.0.1:{server.port}/api/sessions/room/messages", "POST", token, {"data": 1}
        )
    finally:
        await server.stop()
    assert (code, answer) == (500, {"error": {"code": "internal", "message": "authorization failed"}})
    assert "authorize hook failed" in caplog.text
    caplog.clear()  # that ERROR line is the point; no_errors_logged must not count it


# -- refresh ----------------------------------------------------------------------------------------


async def test_refresh_to_a_token_without_the_session_leaves_it_4004(clients: Clients) -> None:
    canary = await Canary.open(clients)
    alice, _ = await clients.join("project-1", "alice", sessions=["project-*"])
    bob, _ = await clients.join("project-1", "bob")
    await alice.recv_type("user_joined")
    async with canary.throughout():
        await alice.send({"type": "refresh", "token": make_token("alice", "acme", sessions=["other-*"])})
        assert await alice.closed_with() == (4004, "session not allowed by token")
    left = await bob.recv_type("user_left")
    assert left["user_id"] == "alice"


async def test_refresh_to_a_viewer_token_stops_writing(clients: Clients) -> None:
    alice, _ = await clients.join("room", "alice")
    await alice.send({"type": "refresh", "token": make_token("alice", "acme", roles=["viewer"])})
    assert (await alice.recv())["type"] == "refreshed"
    await alice.publish("still writing?")
    error = await alice.recv()
    assert (error["type"], error["code"]) == ("error", "forbidden")
    await alice.assert_silent()


async def test_refresh_can_widen_rights_too(clients: Clients) -> None:
    viewer, _ = await clients.join("room", "alice", roles=["viewer"])
    await viewer.send({"type": "refresh", "token": make_token("alice", "acme")})
    assert (await viewer.recv())["type"] == "refreshed"
    await viewer.publish("now I may")
    assert (await viewer.recv())["data"] == "now I may"


async def test_refresh_goes_through_the_authorize_hook(io_loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    revoked: set[str] = set()

    def authorize(claims: Claims, session_id: str) -> bool:
        if claims.user_id == "flaky" and revoked:
            raise RuntimeError("database down")
        return claims.user_id not in revoked

    server = HubServer(test_hub(authorize=authorize)).start()
    pool = Clients(server.port)
    try:
        alice = await pool.connect("room", server.token("alice", "acme"))
        flaky = await pool.connect("room", server.token("flaky", "acme"))
        revoked.add("alice")
        await alice.send({"type": "refresh", "token": server.token("alice", "acme")})
        assert await alice.closed_with() == (4004, "forbidden")
        await flaky.send({"type": "refresh", "token": server.token("flaky", "acme")})
        error = await flaky.recv_type("error")
        assert error["code"] == "internal"
        await flaky.assert_silent()  # still connected, under its old token
    finally:
        await pool.close_all()
        await server.stop()
    caplog.clear()  # the hook's failure is logged at ERROR on purpose
