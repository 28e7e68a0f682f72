"""Presence in Redis: the entries of a session's presence hash, and the rosters built from them.

One entry per connection (a ``/ws`` connection has one in each of its sessions): the JSON
object ``{"n": node, "u": user, "m": name?, "s": state?, "t": tick?}``, written as ASCII by
``json.dumps``. ``s`` is the connection's presence state as JSON text and ``t`` the Redis
clock (microseconds) of its last update, stamped by the STATE script: a user's state is that
of its entry with the highest ``t``, whichever node holds it.
"""

from __future__ import annotations

import json
from typing import Any

from tornado_ws.core import server_messages as messages


def entry(raw: bytes | str) -> dict[str, Any] | None:
    """A presence entry, or None for one that does not decode or whose text no frame can carry."""
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(decoded, dict):
        return None
    texts = (decoded.get("u"), decoded.get("n"), decoded.get("m", ""), decoded.get("s", ""))
    try:
        if not all(isinstance(text, str) and text.encode() is not None for text in texts):
            return None
    except UnicodeEncodeError:
        return None
    return decoded


def entry_json(node_id: str, user_id: str, name: str | None) -> str:
    """A new connection's entry (no state yet)."""
    return json.dumps({"n": node_id, "u": user_id, **({"m": name} if name else {})})


def stated_entry_parts(node_id: str, user_id: str, name: str | None, state_json: str) -> tuple[str, str]:
    """A connection's entry with its state, before and after the tick the STATE script splices in."""
    text = json.dumps({"n": node_id, "u": user_id, **({"m": name} if name else {}), "s": state_json})
    return text[:-1] + ',"t":', "}"


class _User:
    __slots__ = ("name", "state_json", "tick")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.state_json: str | None = None
        self.tick = -1


def users(entries: list[bytes] | list[bytes | str]) -> dict[str, _User]:
    """Distinct users of presence entries, in first-seen order, each with its newest state;
    undecodable entries are skipped."""
    seen: dict[str, _User] = {}
    for raw in entries:
        decoded = entry(raw)
        if decoded is None:
            continue
        user = seen.get(decoded["u"])
        if user is None:
            user = seen[decoded["u"]] = _User(decoded.get("m"))
        tick = decoded.get("t")
        if "s" in decoded and isinstance(tick, int) and tick > user.tick:
            user.state_json, user.tick = decoded["s"], tick
    return seen


def roster(entries: list[bytes] | list[bytes | str], limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """``[{user_id, name?, state?}]`` of the entries' users (the first ``limit`` of them), and
    how many users there are."""
    found = users(entries)
    chosen = list(found.items())[:limit] if limit is not None else found.items()
    return [messages.participant(uid, user.name, _state(user.state_json)) for uid, user in chosen], len(found)


def _state(state_json: str | None) -> Any:
    if state_json is None:
        return None
    try:
        return json.loads(state_json)
    except (ValueError, RecursionError):
        return None  # not ours: no state rather than a broken roster
