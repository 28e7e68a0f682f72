"""Validly signed tokens with hostile claims: what the hub must refuse at verification."""

from __future__ import annotations

from typing import Any

from tests.conftest import make_token

#: Values no claim that reaches a frame or a log line may hold.
HOSTILE_TEXT = {
    "lone-surrogate": "Ann \ud83d",
    "crlf": "mallory\r\n2030-01-01 00:00:00,000 INFO tornado_ws connect session=board org=acme user=ceo",
    "nel": "mallory\x85",
    "line-separator": "mallory\u2028",
}


def hostile_token(claim: str, value: str, **extra: Any) -> str:
    """mallory@acme's token with ``value`` in ``claim`` (as a list entry for roles and sessions)."""
    claims: dict[str, Any] = {"sub": "mallory", "org": "acme", **extra}
    claims[claim] = ["reader", value] if claim in ("roles", "sessions") else value
    return make_token(**claims)
