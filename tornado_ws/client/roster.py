"""Who is in a session, as its frames tell: the participants view of both clients.

A welcome lists the participants (at most ``--presence-roster-limit`` of them, with
``participants_truncated``); ``user_joined``/``user_left`` and, in a session over that limit,
``presence_summary`` change the list; ``presence_state`` changes one user's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

#: User ids a ``presence_summary`` lists per direction at most: a full list may have left some out.
SUMMARY_USERS = 100


class Roster:
    """``user_id -> {"user_id", "name"?, "state"?}``, replaced (never mutated) entry by entry, so
    an entry a caller holds stays as it was."""

    def __init__(self) -> None:
        self._users: dict[str, Mapping[str, Any]] = {}
        self.view: Mapping[str, Mapping[str, Any]] = MappingProxyType(self._users)
        #: The session's number of participants, as the server last said; ``None`` before a welcome.
        self.count: int | None = None
        #: Whether the view may miss participants (a truncated welcome, a full summary).
        self.truncated = False

    def apply(self, frame: Mapping[str, Any]) -> None:
        """Follow one server frame of the session (any type: the others change nothing)."""
        kind = frame.get("type")
        if kind == "welcome":
            self._users.clear()
            for participant in frame.get("participants") or ():
                if isinstance(participant, dict) and isinstance(participant.get("user_id"), str):
                    self._users[participant["user_id"]] = MappingProxyType(dict(participant))
            self.truncated = frame.get("participants_truncated") is True
        elif kind == "user_joined":
            user_id = frame.get("user_id")
            if isinstance(user_id, str):
                entry = {"user_id": user_id, **({"name": frame["name"]} if "name" in frame else {})}
                state = self._users.get(user_id, {}).get("state")
                self._users[user_id] = MappingProxyType({**entry, **({"state": state} if state is not None else {})})
        elif kind == "user_left":
            self._users.pop(str(frame.get("user_id")), None)
        elif kind == "presence_state":
            self._state(frame.get("user_id"), frame.get("state"))
        elif kind == "presence_summary":
            joined, left = frame.get("joined") or [], frame.get("left") or []
            for user_id in left:
                self._users.pop(str(user_id), None)
            for user_id in joined:
                if isinstance(user_id, str) and user_id not in self._users:
                    self._users[user_id] = MappingProxyType({"user_id": user_id})
            if len(joined) >= SUMMARY_USERS or len(left) >= SUMMARY_USERS:
                self.truncated = True
        else:
            return
        count = frame.get("participant_count")
        if isinstance(count, int) and not isinstance(count, bool):
            self.count = count

    def _state(self, user_id: object, state: object) -> None:
        if not isinstance(user_id, str):
            return
        entry = self._users.get(user_id)
        if entry is None:
            if isinstance(state, dict):  # only a participant has a state: one a truncated list left out
                self._users[user_id] = MappingProxyType({"user_id": user_id, "state": state})
            return
        updated = {key: value for key, value in entry.items() if key != "state"}
        if state is not None:
            updated["state"] = state
        self._users[user_id] = MappingProxyType(updated)
