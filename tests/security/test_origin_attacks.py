"""F. Cross-site WebSocket hijacking: the Origin rules, default and listed."""

from __future__ import annotations

from typing import Any

import pytest
import websockets

from tests.canary import Canary
from tests.conftest import QUIET_PINGS, Clients, make_token, test_config
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry


async def test_cross_site_origins_are_refused_403_before_the_upgrade(
    clients: Clients, port: int, registry: Registry, app: Any
) -> None:
    """Default rule: the Origin's host:port must equal the Host header (same-origin browsers only)."""
    canary = await Canary.open(clients)
    hostile = [
        "https://attacker.example",
        "null",
        f"http://127.0.0.1:{port}.attacker.example",
        f"http://127.0.0.1:{port + 1}",
        f"http://attacker.example/127.0.0.1:{port}",
        "file://",
    ]
    async with canary.throughout():
        for origin in hostile:
            with pytest.raises(websockets.InvalidStatus) as info:
                await clients.connect("standup", make_token("victim"), origin=origin)
            assert info.value.response.status_code == 403, origin
        same, welcome = await clients.join("standup", "victim")  # non-browser clients send no Origin
    assert welcome["participant_count"] == 1
    await same.close()
    text = app.settings["state"].metrics.render().decode()
    assert f'tornado_ws_handshakes_refused_total{{reason="origin"}} {float(len(hostile))}' in text


class TestAllowedOriginsList:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(allowed_origins=("https://app.example",), **QUIET_PINGS)

    @pytest.mark.parametrize(
        "origin",
        [
            "https://app.example.attacker.example",
            "https://attacker-app.example",
            "http://app.example",
            "https://app.example:8443",
            "https://app.examplex",
            "null",
            "https://app.example.",
        ],
    )
    async def test_only_exact_listed_origins_pass(self, clients: Clients, origin: str) -> None:
        canary = await Canary.open(clients)
        async with canary.throughout():
            with pytest.raises(websockets.InvalidStatus) as info:
                await clients.connect("standup", make_token("victim"), origin=origin)
            assert info.value.response.status_code == 403
            ok = await clients.connect("standup", make_token("victim"), origin="https://APP.example")
            assert (await ok.recv())["type"] == "welcome"
