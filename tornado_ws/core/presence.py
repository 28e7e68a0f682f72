"""Who is in a session and what they are doing: the roster and its state changes. No I/O.

A :class:`Roster` holds a session's participants: one entry per user however many connections
(memberships) it has there, its display name and its presence *state*, that of its most
recently updated membership. :class:`StateBatch` coalesces state changes: the latest
``presence_state`` frame per (session, user) waits for the owner's next flush, so a burst of
updates reaches each member as one frame.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tornado_ws.core import server_messages as messages

if TYPE_CHECKING:
    from tornado_ws.core.registry import Membership, SessionKey
    from tornado_ws.core.server_messages import OutFrame

#: Orders state updates across a process: the highest tick is the most recent.
_ticks = itertools.count(1)


@dataclasses.dataclass(slots=True)
class _User:
    name: str | None
    members: list[Membership]
    #: The most recently updated membership that has a state: the user's state is its state.
    source: Membership | None = None


class Roster:
    """A session's participants, in the order they arrived."""

    __slots__ = ("_users",)

    def __init__(self) -> None:
        self._users: dict[str, _User] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def connections(self, user_id: str) -> int:
        user = self._users.get(user_id)
        return 0 if user is None else len(user.members)

    def add(self, member: Membership) -> bool:
        """Add ``member``; True when it is the user's first membership here."""
        user = self._users.get(member.user_id)
        if user is None:
            self._users[member.user_id] = _User(member.name, [member])
            return True
        user.members.append(member)
        return False

    def remove(self, member: Membership) -> tuple[bool, bool]:
        """Remove ``member``: (it was the user's last membership, the user's state changed)."""
        user = self._users[member.user_id]
        user.members.remove(member)
        if not user.members:
            del self._users[member.user_id]
            return True, False
        if user.source is not member:
            return False, False
        stated = [m for m in user.members if m.state_tick]
        user.source = max(stated, key=lambda m: m.state_tick) if stated else None
        return False, True

    def set_state(self, member: Membership, state: Any, state_json: str) -> None:
        """``member``'s state is ``state`` (a JSON object whose text is ``state_json``), and so
        is its user's: the most recent update wins."""
        member.state, member.state_json, member.state_tick = state, state_json, next(_ticks)
        self._users[member.user_id].source = member

    def state_json(self, user_id: str) -> str:
        """The JSON text of the user's state (``null`` when it has none)."""
        user = self._users.get(user_id)
        source = None if user is None else user.source
        return "null" if source is None or source.state_json is None else source.state_json

    def participants(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``[{user_id, name?, state?}]``: every participant, or the first ``limit`` to arrive."""
        users: Iterator[tuple[str, _User]] = iter(self._users.items())
        if limit is not None:
            users = itertools.islice(users, limit)
        return [_participant(uid, user) for uid, user in users]


def _participant(user_id: str, user: _User) -> dict[str, Any]:
    return messages.participant(user_id, user.name, None if user.source is None else user.source.state)


class StateBatch:
    """The latest ``presence_state`` frame per (session, user), waiting for the next flush."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[SessionKey, dict[str, OutFrame]] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, key: SessionKey, user_id: str, frame: OutFrame) -> None:
        users = self._pending.setdefault(key, {})
        users.pop(user_id, None)  # the newest goes last: the order of the latest changes
        users[user_id] = frame

    def discard(self, key: SessionKey, user_id: str) -> None:
        users = self._pending.get(key)
        if users is not None:
            users.pop(user_id, None)

    def take(self, key: SessionKey) -> list[OutFrame]:
        return list(self._pending.pop(key, {}).values())

    def take_all(self) -> list[tuple[SessionKey, list[OutFrame]]]:
        pending, self._pending = self._pending, {}
        return [(key, list(users.values())) for key, users in pending.items()]


#: User ids one ``presence_summary`` lists per direction, at most.
SUMMARY_USERS = 100


class Summary:
    """Who joined and who left a big session since its last ``presence_summary``, newest first.

    Net changes only: a user who joins and leaves within one summary is in neither list."""

    __slots__ = ("count", "joined", "left", "scheduled")

    def __init__(self) -> None:
        self.joined: dict[str, None] = {}
        self.left: dict[str, None] = {}
        #: The participant count after the latest change (every node's, with Redis).
        self.count = 0
        #: Whether the owner has a flush of this summary scheduled.
        self.scheduled = False

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)

    def user_joined(self, user_id: str) -> None:
        if user_id in self.left:
            del self.left[user_id]  # left and came back within one summary: nothing changed
        else:
            self.joined[user_id] = None

    def user_left(self, user_id: str) -> None:
        if user_id in self.joined:
            del self.joined[user_id]
        else:
            self.left[user_id] = None

    def frame(self, session_id: str) -> OutFrame:
        """The ``presence_summary`` of the changes so far."""
        joined = list(reversed(self.joined))[:SUMMARY_USERS]
        left = list(reversed(self.left))[:SUMMARY_USERS]
        return messages.presence_summary_frame(session_id=session_id, count=self.count, joined=joined, left=left)
