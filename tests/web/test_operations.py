"""Production features through real HTTP and WebSocket clients: API, limits, token lifetime, health."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets
from tornado.httpclient import HTTPClientError

from tests.conftest import Clients, call, make_token, test_config
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry, SessionKey
from tornado_ws.web.state import AppState


def service(org: str = "acme", sub: str = "billing") -> str:
    return make_token(sub, org, roles=["service"])


def admin(org: str = "acme") -> str:
    return make_token("ops", org, roles=["admin"])


# -- HTTP API --------------------------------------------------------------------------------------


async def test_service_publish_reaches_the_session_like_a_client_message(
    http_server_client: Any, clients: Clients
) -> None:
    alice, _ = await clients.join("standup", "alice")
    code, body = await call(http_server_client, "POST", "/api/sessions/standup/messages", service(), {"data": {"x": 1}})
    assert (code, body) == (200, {"seq": 1})
    frame = await alice.recv()
    assert (frame["type"], frame["user_id"], frame["seq"], frame["data"]) == ("message", "billing", 1, {"x": 1})
    await alice.publish("next")
    assert (await alice.recv())["seq"] == 2  # one sequence for API and socket publishers


async def test_publish_is_scoped_to_the_callers_org(http_server_client: Any, clients: Clients) -> None:
    alice, _ = await clients.join("standup", "alice", "acme")
    code, body = await call(
        http_server_client, "POST", "/api/sessions/standup/messages", service("globex"), {"data": "x"}
    )
    assert (code, body) == (200, {"seq": 1})
    await alice.assert_silent()


@pytest.mark.parametrize(
    ("token", "body", "raw", "status", "code"),
    [
        (None, {"data": 1}, None, 401, "unauthorized"),
        ("garbage", {"data": 1}, None, 401, "unauthorized"),
        ("user", {"data": 1}, None, 403, "forbidden"),
        ("service", None, b"{not json", 400, "bad_json"),
        ("service", None, b'{"data": NaN}', 400, "bad_json"),
        ("service", None, b"\xff\xfe", 400, "bad_json"),
        ("service", {"nodata": 1}, None, 400, "bad_request"),
        ("service", [1], None, 400, "bad_request"),
        ("service", {"data": "x" * 70000}, None, 413, "payload_too_large"),
    ],
)
async def test_publish_errors_are_json(
    http_server_client: Any, clients: Clients, token: str | None, body: Any, raw: bytes | None, status: int, code: str
) -> None:
    member, _ = await clients.join("standup", "alice")
    tokens = {"user": make_token("alice", "acme"), "service": service(), "garbage": "garbage", None: None}
    got_status, got = await call(http_server_client, "POST", "/api/sessions/standup/messages", tokens[token], body, raw)
    assert got_status == status
    assert got["error"]["code"] == code and got["error"]["message"]
    await member.assert_silent()


async def test_bad_session_id_and_wrong_method_are_json_errors(http_server_client: Any) -> None:
    code, body = await call(http_server_client, "POST", "/api/sessions/a%20b/messages", service(), {"data": 1})
    assert (code, body["error"]["code"]) == (400, "invalid_session_id")
    code, body = await call(http_server_client, "GET", "/api/sessions/room/messages", service())
    assert code == 405 and "error" in body


async def test_presence_lists_distinct_users_of_the_callers_org(http_server_client: Any, clients: Clients) -> None:
    await clients.join("standup", "alice", name="Alice")
    await clients.join("standup", "alice", name="Alice")
    await clients.join("standup", "bob")
    await clients.join("standup", "eve", "globex")
    token = make_token("viewer", "acme")
    code, body = await call(http_server_client, "GET", "/api/sessions/standup/presence", token)
    assert code == 200
    assert body == {"participants": [{"user_id": "alice", "name": "Alice"}, {"user_id": "bob"}], "participant_count": 2}
    code, body = await call(http_server_client, "GET", "/api/sessions/empty/presence", token)
    assert body == {"participants": [], "participant_count": 0}


async def test_admin_kick_closes_every_connection_of_the_user_with_4003(
    http_server_client: Any, clients: Clients
) -> None:
    tab1, _ = await clients.join("standup", "mallory")
    tab2, _ = await clients.join("standup", "mallory")
    bob, _ = await clients.join("standup", "bob")
    elsewhere, _ = await clients.join("retro", "mallory")
    code, body = await call(http_server_client, "DELETE", "/api/sessions/standup/users/mallory", admin())
    assert (code, body["connections_closed"]) == (200, 2)
    for tab in (tab1, tab2):
        assert await tab.closed_with() == (4003, "kicked")
    left = await bob.recv()
    assert (left["type"], left["user_id"], left["participant_count"]) == ("user_left", "mallory", 1)
    await elsewhere.assert_silent()  # kicked from one session, not from the org


async def test_kick_needs_admin_and_stays_in_the_org(http_server_client: Any, clients: Clients) -> None:
    mallory, _ = await clients.join("standup", "mallory", "acme")
    code, body = await call(http_server_client, "DELETE", "/api/sessions/standup/users/mallory", service())
    assert (code, body["error"]["code"]) == (403, "forbidden")
    code, body = await call(http_server_client, "DELETE", "/api/sessions/standup/users/mallory", admin("globex"))
    assert (code, body["connections_closed"]) == (200, 0)
    await mallory.assert_silent()


# -- limits -----------------------------------------------------------------------------------------


class TestRateLimit:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(rate_limit=1, rate_burst=3)

    async def test_over_the_rate_frames_get_rate_limited_and_the_connection_stays(
        self, clients: Clients, registry: Registry
    ) -> None:
        alice, _ = await clients.join("room", "alice")
        bob, _ = await clients.join("room", "bob")
        await alice.recv_type("user_joined")
        for n in range(6):
            await alice.publish(n)
        frames = [await alice.recv() for _ in range(6)]
        delivered = [f["data"] for f in frames if f["type"] == "message"]
        limited = [f for f in frames if f["type"] == "error"]
        assert delivered == [0, 1, 2]
        assert len(limited) == 3 and all(f["code"] == "rate_limited" for f in limited)
        assert [(await bob.recv())["data"] for _ in range(3)] == [0, 1, 2]
        await bob.assert_silent()
        assert alice.ws.state is websockets.protocol.State.OPEN


class TestConnectionLimits:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_connections_per_user=2, max_connections=4, max_session_id_length=8)

    async def test_per_user_limit_closes_1013_across_sessions(self, clients: Clients) -> None:
        first, _ = await clients.join("a", "alice")
        await clients.join("b", "alice")
        third = await clients.connect("c", make_token("alice"))
        assert await third.closed_with() == (1013, "too many connections for this user")
        await clients.join("c", "bob")  # other users are unaffected
        await first.close()
        _, welcome = await clients.join("c", "alice")
        assert welcome["user_id"] == "alice"

    async def test_process_limit_answers_503_before_the_upgrade(self, clients: Clients, registry: Registry) -> None:
        for user in ("u1", "u2", "u3", "u4"):
            await clients.join("room", user)
        with pytest.raises(websockets.InvalidStatus) as info:
            await clients.connect("room", make_token("u5"))
        assert info.value.response.status_code == 503
        assert json.loads(info.value.response.body)["error"]["code"] == "max_connections"

    async def test_session_id_length_is_configurable(self, clients: Clients) -> None:
        await clients.join("x" * 8)
        client = await clients.connect("x" * 9, make_token())
        assert (await client.closed_with())[0] == 1008


class TestSlowConsumer:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_outbound_buffer=256 * 1024)

    async def test_a_reader_that_stops_is_cut_4008_and_others_carry_on(
        self, clients: Clients, registry: Registry, app: Any
    ) -> None:
        slow, _ = await clients.join("room", "slow")
        pub, _ = await clients.join("room", "pub")
        bystander, _ = await clients.join("room", "bystander")
        slow.ws.transport.pause_reading()  # stops reading; the kernel buffers fill, then ours
        chunk = "x" * 32_000
        for n in range(400):
            await pub.publish({"n": n, "pad": chunk})
            if n % 20 == 0:
                await asyncio.sleep(0)
            if "slow" not in {p["user_id"] for p in registry.presence(SessionKey("acme", "room"))["participants"]}:
                break
        left = await bystander.recv_type("user_left", timeout=10)
        assert left["user_id"] == "slow"
        await pub.publish("after")
        while (await bystander.recv_type("message"))["data"] != "after":
            pass
        slow.ws.transport.resume_reading()
        assert await slow.closed_with(timeout=10) == (4008, "slow consumer")
        state: AppState = app.settings["state"]
        assert state.metrics.slow_consumers == 1


# -- origin ----------------------------------------------------------------------------------------


class TestAllowedOrigins:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(allowed_origins=("https://app.example",))

    async def test_only_listed_origins_and_non_browsers_may_connect(self, clients: Clients) -> None:
        with pytest.raises(websockets.InvalidStatus) as info:
            await clients.connect("room", make_token(), origin="https://evil.example")
        assert info.value.response.status_code == 403
        ok = await clients.connect("room", make_token(), origin="https://app.example")
        assert (await ok.recv())["type"] == "welcome"
        service_client = await clients.connect("room", make_token("svc"))
        assert (await service_client.recv())["type"] == "welcome"


async def test_default_origin_rule_is_same_host(clients: Clients, port: int) -> None:
    same = await clients.connect("room", make_token(), origin=f"http://127.0.0.1:{port}")
    assert (await same.recv())["type"] == "welcome"
    with pytest.raises(websockets.InvalidStatus) as info:
        await clients.connect("room", make_token("bob"), origin="https://attacker.example")
    assert info.value.response.status_code == 403


# -- token lifetime ------------------------------------------------------------------------------


def short_token(sub: str = "alice", org: str = "acme", seconds: int = 1) -> str:
    return make_token(sub, org, ttl=seconds)


async def test_connection_closes_4001_when_its_token_expires(clients: Clients) -> None:
    client = await clients.connect("room", short_token())
    assert (await client.recv())["type"] == "welcome"
    assert await client.closed_with(timeout=5) == (4001, "token expired")


class TestExpiryWithoutPings:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0)

    async def test_the_once_a_second_sweep_still_closes_4001(self, clients: Clients) -> None:
        stays, _ = await clients.join("room", "bob")  # a 10-minute token
        client = await clients.connect("room", short_token())
        assert (await client.recv())["type"] == "welcome"
        assert await client.closed_with(timeout=5) == (4001, "token expired")
        assert (await stays.recv_type("user_left"))["user_id"] == "alice"
        await stays.send({"type": "ping"})
        assert (await stays.recv())["type"] == "pong"  # swept too, and still connected


async def _expires_in(token: str) -> float:
    import jwt

    return float(jwt.decode(token, options={"verify_signature": False})["exp"]) - time.time()


async def test_refresh_in_time_keeps_the_connection(clients: Clients) -> None:
    token = short_token(seconds=2)
    client = await clients.connect("room", token)
    assert (await client.recv())["type"] == "welcome"
    await client.send({"type": "refresh", "token": make_token("alice", "acme", ttl=60)})
    refreshed = await client.recv()
    assert refreshed["type"] == "refreshed" and refreshed["expires_at"] > time.time() + 50
    await asyncio.sleep(max(0.0, await _expires_in(token)) + 0.5)  # past the old expiry: time is the event
    await client.assert_silent()


async def test_refresh_for_another_user_is_bad_refresh_and_closes_1008(clients: Clients) -> None:
    client, _ = await clients.join("room", "alice")
    await client.send({"type": "refresh", "token": make_token("mallory", "acme")})
    error = await client.recv()
    assert (error["type"], error["code"]) == ("error", "bad_refresh")
    assert (await client.closed_with())[0] == 1008


async def test_invalid_refresh_token_is_refused_but_the_connection_lives(clients: Clients) -> None:
    client, _ = await clients.join("room", "alice")
    await client.send({"type": "refresh", "token": make_token("alice", "acme", ttl=-5)})
    error = await client.recv()
    assert (error["code"], error["message"]) == ("bad_refresh", "refresh refused: token expired")
    await client.send({"type": "refresh"})
    assert (await client.recv())["code"] == "bad_frame"
    await client.assert_silent()


# -- health, readiness, metrics -----------------------------------------------------------------


async def test_readyz_turns_503_while_draining(http_server_client: Any, app: Any, clients: Clients) -> None:
    code, body = await call(http_server_client, "GET", "/readyz")
    assert (code, body) == (200, {"status": "ready"})
    app.settings["state"].draining = True
    code, body = await call(http_server_client, "GET", "/readyz")
    assert (code, body) == (503, {"status": "draining"})
    with pytest.raises(websockets.InvalidStatus) as info:
        await clients.connect("room", make_token())
    assert info.value.response.status_code == 503


async def test_metrics_count_what_happened_and_never_show_tokens(
    http_server_client: Any, clients: Clients, app: Any
) -> None:
    alice, _ = await clients.join("room", "alice")
    bob, _ = await clients.join("room", "bob")
    await alice.publish("hi")
    await bob.recv_type("message")
    bad_token = make_token(ttl=-5)
    refused = await clients.connect("room", bad_token)
    await refused.closed_with()
    await bob.close()
    await alice.recv_type("user_left")  # sent once bob's disconnect was counted and he left
    response = await http_server_client.fetch("/metrics")
    text = response.body.decode()
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "tornado_ws_connections_open 1.0" in text
    assert "tornado_ws_sessions_open 1.0" in text
    assert 'tornado_ws_messages_in_total{source="websocket"} 1.0' in text
    assert "tornado_ws_messages_out_total 2.0" in text
    assert 'tornado_ws_handshakes_refused_total{reason="token_expired"} 1.0' in text
    assert 'tornado_ws_disconnects_total{code="1000"} 1.0' in text
    assert "tornado_ws_broadcast_seconds_count 1.0" in text
    assert "tornado_ws_bytes_out_total" in text and "tornado_ws_rate_limited_frames_total 0.0" in text
    assert bad_token not in text and bad_token.split(".")[1] not in text


class TestMetricsToken:
    TOKEN = "metrics-" + "x" * 24

    @pytest.fixture
    def config(self) -> Config:
        return test_config(metrics_token=self.TOKEN)

    @pytest.mark.parametrize(
        "authorization", [None, "Bearer wrong-token-of-some-length", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
    )
    async def test_metrics_need_the_token(self, http_server_client: Any, authorization: str | None) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        with pytest.raises(HTTPClientError) as info:
            await http_server_client.fetch("/metrics", headers=headers)
        response = info.value.response
        assert response is not None and response.code == 401
        assert json.loads(response.body)["error"]["code"] == "unauthorized"
        assert b"tornado_ws_" not in response.body

    async def test_metrics_with_the_token(self, http_server_client: Any) -> None:
        response = await http_server_client.fetch("/metrics", headers={"Authorization": f"Bearer {self.TOKEN}"})
        assert response.code == 200 and b"tornado_ws_connections_open" in response.body


def test_metrics_token_comes_from_the_flag_or_the_environment() -> None:
    from tornado_ws.cli import config_from_args

    token = "t" * 20
    config, _ = config_from_args(["--jwt-secret", "s" * 32, "--metrics-token", token], env={})
    assert config.metrics_token == token and token not in repr(config)
    config, _ = config_from_args(["--jwt-secret", "s" * 32], env={"TORNADO_WS_METRICS_TOKEN": token})
    assert config.metrics_token == token
    assert config_from_args(["--jwt-secret", "s" * 32], env={})[0].metrics_token is None


class TestSessionsPerOrg:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_sessions_per_org=2)

    async def test_new_sessions_beyond_the_cap_are_refused(self, clients: Clients, http_server_client: Any) -> None:
        await clients.join("one", "alice")
        await clients.join("two", "alice")
        third = await clients.connect("three", make_token("alice"))
        assert await third.closed_with() == (1013, "too many sessions in this organization")
        code, body = await call(http_server_client, "POST", "/api/sessions/four/messages", service(), {"data": 1})
        assert (code, body["error"]["code"]) == (429, "too_many_sessions")
        _, welcome = await clients.join("three", "eve", "globex")  # other orgs are unaffected
        assert welcome["participant_count"] == 1
        _, again = await clients.join("one", "bob")  # existing sessions still take members
        assert again["participant_count"] == 2
