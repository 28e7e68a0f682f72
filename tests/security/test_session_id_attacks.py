"""B. Session ids: path tricks, encodings, look-alikes and lengths; ids are opaque keys."""

from __future__ import annotations

import pytest

from tests.canary import Canary, intruder_is_refused
from tests.conftest import Clients, make_token
from tornado_ws.core.registry import Registry, SessionKey

HOSTILE_SESSION_IDS = {
    "dot-dot-slash-encoded": "..%2F..%2Fetc%2Fpasswd",
    "dot-dot-slash-double-encoded": "%252e%252e%252fetc",
    "dot-dot-backslash": "..%5C..%5Cwindows",
    "slash": "a%2Fb",
    "nul": "room%00",
    "nul-then-suffix": "room%00.json",
    "space": "a%20b",
    "plus": "a+b",
    "crlf-log-injection": "room%0D%0AINFO%20fake%20log%20line",
    "tab": "room%09",
    "over-long-129": "x" * 129,
    "over-long-5000": "y" * 5000,
    "cyrillic-a-lookalike": "%D0%B0dmin",
    "fullwidth-A": "%EF%BC%A1dmin",
    "zero-width-space": "room%E2%80%8B",
    "combining-accent": "cafe%CC%81",
    "invalid-utf8": "%FF%FE",
    "overlong-utf8-slash": "%C0%AF",
    "empty": "",
    "percent": "100%25",
    "semicolon": "room;drop",
    "at-sign": "a@b",
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_SESSION_IDS))
async def test_hostile_session_ids_are_closed_1008(clients: Clients, registry: Registry, attack: str) -> None:
    canary = await Canary.open(clients)
    async with canary.throughout():
        assert await intruder_is_refused(clients, make_token("mallory"), HOSTILE_SESSION_IDS[attack]) == (
            1008,
            "invalid session id",
        )
    assert {key.session_id for key in registry.sessions} == {Canary.SESSION}


async def test_dot_segments_are_opaque_ids_not_paths(clients: Clients, registry: Registry) -> None:
    """``.`` and ``..`` are legal id characters; the id is only ever a dictionary key, never a path."""
    canary = await Canary.open(clients)
    async with canary.throughout():
        dots, welcome = await clients.join("...", "mallory")
        assert welcome["session_id"] == "..."
        await dots.publish("x")
        assert (await dots.recv())["session_id"] == "..."
    assert SessionKey("acme", "...") in registry.sessions
