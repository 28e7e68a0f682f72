"""Admission through real sockets (memory broker): the per-org connection cap and bans by kick.

Attacks in the canary pattern of the attack catalogue (tests/security/, tests/canary.py): while
they run, a canary session of another org keeps talking, and no ERROR may be logged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from tests.canary import Canary
from tests.conftest import QUIET_PINGS, SECRET, Client, Clients, make_token, test_config, wait_for
from tornado_ws.brokers.base import MAX_BAN_SECONDS
from tornado_ws.cli import config_from_args
from tornado_ws.config import Config, ConfigError
from tornado_ws.core.registry import Registry
from tornado_ws.testing import test_hub

pytestmark = pytest.mark.usefixtures("no_errors_logged")

ADMIN = {"Authorization": f"Bearer {make_token('ops', roles=['admin'])}"}


async def kick(http: Any, session: str, user: str, query: str = "") -> tuple[int, dict[str, Any]]:
    response = await http.fetch(
        f"/api/sessions/{session}/users/{user}{query}", method="DELETE", headers=ADMIN, raise_error=False
    )
    return response.code, json.loads(response.body)


async def refusal(clients: Clients, session: str, sub: str, org: str = "acme") -> tuple[int | None, str]:
    client = await clients.connect(session, make_token(sub, org))
    return await client.closed_with()


async def join_once_allowed(clients: Clients, session: str, sub: str, timeout: float = 5.0) -> Client:
    """Reconnect until welcomed (a bounded poll on real joins); refusals meanwhile must be the ban's."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        client = await clients.connect(session, make_token(sub))
        try:
            frame = await client.recv()
            assert frame["type"] == "welcome", frame
            return client
        except websockets.ConnectionClosed:
            assert await client.closed_with() == (4003, "banned")
            assert loop.time() < deadline, "the ban did not end"
            await asyncio.sleep(0.1)


class TestConnectionsPerOrg:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_connections_per_org=3, **QUIET_PINGS)

    async def test_one_org_cannot_take_every_connection(self, clients: Clients, registry: Registry) -> None:
        canary = await Canary.open(clients, org="globex")
        async with canary.throughout():
            tabs = [(await clients.join(f"s{n}", f"u{n}"))[0] for n in range(3)]
            assert await refusal(clients, "s0", "u9") == (1013, "too many connections for this organization")
            assert await refusal(clients, "s9", "u0") == (1013, "too many connections for this organization")
            _, welcome = await clients.join("s0", "eve", "initech")  # other orgs still connect
            assert welcome["participant_count"] == 1
            await tabs[0].close()
            await wait_for(lambda: registry.org_connections("acme") == 2)  # a poll: tab 0 was alone in s0
            _, welcome = await clients.join("s0", "u9")
            assert welcome["participants"] == [{"user_id": "u9"}]
        assert registry.org_connections("acme") == 3

    def test_the_flag_is_validated(self) -> None:
        assert test_config().max_connections_per_org == 10_000
        assert test_config(max_connections_per_org=0).max_connections_per_org == 0  # off
        with pytest.raises(ValueError, match="--max-connections-per-org"):
            test_config(max_connections_per_org=-1)


class TestBans:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(**QUIET_PINGS)

    async def test_a_kick_with_ban_seconds_keeps_the_user_out_until_it_ends(
        self, clients: Clients, http_server_client: Any
    ) -> None:
        canary = await Canary.open(clients, org="globex")
        async with canary.throughout():
            mallory, _ = await clients.join("room", "mallory")
            bob, _ = await clients.join("room", "bob")
            assert await kick(http_server_client, "room", "mallory", "?ban_seconds=1") == (
                200,
                {"session_id": "room", "user_id": "mallory", "connections_closed": 1},
            )
            assert await mallory.closed_with() == (4003, "kicked")
            assert await refusal(clients, "room", "mallory") == (4003, "banned")  # at once, same token
            _, welcome = await clients.join("room", "carol")  # others still join
            assert {p["user_id"] for p in welcome["participants"]} == {"bob", "carol"}
            await clients.join("elsewhere", "mallory")  # the ban is for that session only
            back = await join_once_allowed(clients, "room", "mallory")
            await back.close()
            await bob.recv_type("user_left")

    async def test_a_kick_without_ban_seconds_is_not_a_ban(self, clients: Clients, http_server_client: Any) -> None:
        mallory, _ = await clients.join("room", "mallory")
        assert (await kick(http_server_client, "room", "mallory"))[0] == 200
        assert await mallory.closed_with() == (4003, "kicked")
        _, welcome = await clients.join("room", "mallory")
        assert welcome["type"] == "welcome"

    @pytest.mark.parametrize(
        "value", ["-1", "abc", "1.5", "", "%C2%B2", "%D9%A3", str(MAX_BAN_SECONDS + 1), "9" * 20, "1%00"]
    )
    async def test_a_bad_ban_seconds_is_a_400_and_kicks_nobody(
        self, value: str, clients: Clients, http_server_client: Any
    ) -> None:
        mallory, _ = await clients.join("room", "mallory")
        code, body = await kick(http_server_client, "room", "mallory", f"?ban_seconds={value}")
        assert (code, body["error"]["code"]) == (400, "bad_request")
        assert str(MAX_BAN_SECONDS) in body["error"]["message"]
        await mallory.assert_silent()  # still connected, nothing happened

    async def test_the_longest_ban_is_accepted(self, clients: Clients, http_server_client: Any) -> None:
        mallory, _ = await clients.join("room", "mallory")
        assert (await kick(http_server_client, "room", "mallory", f"?ban_seconds={MAX_BAN_SECONDS}"))[0] == 200
        assert await mallory.closed_with() == (4003, "kicked")
        assert await refusal(clients, "room", "mallory") == (4003, "banned")


async def test_hub_kick_bans_and_checks_its_argument() -> None:
    hub = test_hub()
    for bad in (-1, MAX_BAN_SECONDS + 1, 1.5, True, "5"):
        with pytest.raises(ValueError, match="ban_seconds"):
            await hub.kick("acme", "room", "mallory", ban_seconds=bad)  # type: ignore[arg-type]
    assert await hub.kick("acme", "room", "mallory", ban_seconds=60) == 0
    assert hub.registry.banned(hub._key("acme", "room"), "mallory")
    await hub.aclose()


def test_the_cli_flag_reaches_the_config() -> None:
    config, _ = config_from_args(["--jwt-secret", SECRET, "--max-connections-per-org", "5"], env={})
    assert config.max_connections_per_org == 5
    assert config_from_args(["--jwt-secret", SECRET], env={})[0].max_connections_per_org == 10_000
    with pytest.raises(ConfigError, match="--max-connections-per-org"):
        config_from_args(["--jwt-secret", SECRET, "--max-connections-per-org", "-1"], env={})


async def test_hub_publish_to_a_new_session_over_the_org_cap_is_a_value_error() -> None:
    hub = test_hub(max_sessions_per_org=1)
    assert await hub.publish("acme", "one", 1, user_id="svc") == 1
    with pytest.raises(ValueError, match="session limit"):
        await hub.publish("acme", "two", 1, user_id="svc")
    assert await hub.publish("acme", "one", 2, user_id="svc") == 2  # the existing one still takes messages
    assert await hub.publish("globex", "two", 1, user_id="svc") == 1
    await hub.aclose()
