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
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from tornado_ws.core import server_messages as messages
from tornado_ws.core.server_messages import OutFrame

if TYPE_CHECKING:
    from tornado_ws.core.session import Membership, Session, SessionKey

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
    """The latest ``presence_state`` frame per (session, user), with its presence version (Redis),
    waiting for the next flush."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[SessionKey, dict[str, tuple[OutFrame, int | None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, key: SessionKey, user_id: str, frame: OutFrame, version: int | None = None) -> None:
        users = self._pending.setdefault(key, {})
        users.pop(user_id, None)  # the newest goes last: the order of the latest changes
        users[user_id] = (frame, version)

    def discard(self, key: SessionKey, user_id: str) -> None:
        users = self._pending.get(key)
        if users is not None:
            users.pop(user_id, None)

    def take(self, key: SessionKey) -> list[tuple[OutFrame, int | None]]:
        return list(self._pending.pop(key, {}).values())

    def take_all(self) -> list[tuple[SessionKey, list[tuple[OutFrame, int | None]]]]:
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


#: Seconds between two flushes of presence_state frames, at least (the coalescing window).
STATE_INTERVAL = 0.05


class PresenceFanout:
    """The registry's presence fan-out: ``user_joined``/``user_left`` or their summaries,
    coalesced ``presence_state`` frames, and signals. A part of
    :class:`~tornado_ws.core.registry.Registry`, apart so each file reads on its own."""

    sessions: dict[SessionKey, Session]
    roster_limit: int
    schedule: Callable[[float, Callable[[], None]], object] | None
    _clock: Callable[[], float]
    _states: StateBatch
    _states_scheduled: bool
    _states_sent: float

    #: The registry's own fan-out (``Registry.deliver``), which these use.
    deliver: Callable[..., None]

    def announce(
        self,
        key: SessionKey,
        kind: str,
        user_id: str,
        name: str | None,
        count: int,
        exclude: str | None,
        *,
        version: int | None = None,
    ) -> None:
        """Tell this node's members of ``key`` that ``user_id`` joined or left (``count``
        participants now), excluding connection ``exclude``: a ``user_joined``/``user_left``
        frame, or in a session over the roster limit an entry of its next ``presence_summary``.
        ``version`` orders it among the session's presence changes (Redis; see ``release``)."""
        session = self.sessions.get(key)
        if session is None:
            return
        self._flush_states_of(key)  # a state change before a leave arrives before it
        if count + (kind == "user_left") > self.roster_limit:  # over it before a leave, after a join
            summary = session.summary = session.summary or Summary()
            (summary.user_joined if kind == "user_joined" else summary.user_left)(user_id)
            summary.count = count
            self._schedule_summary(session)
            return
        if session.summary:
            self._send_summary(key)  # what the summary holds happened first
        members = session.members
        if len(members) > 1 or exclude not in members:  # nobody to tell in a room of one
            frame = messages.presence_frame(kind, session_id=key.session_id, user_id=user_id, name=name, count=count)
            self.deliver(key, frame, exclude=exclude, version=version)

    def _schedule_summary(self, session: Session) -> None:
        summary = session.summary
        if summary is None or summary.scheduled:
            return
        if self.schedule is None:
            self._send_summary(session.key)
            return
        summary.scheduled = True
        key = session.key
        self.schedule(max(0.0, session.summary_sent + 1.0 - self._clock()), lambda: self._send_summary(key))

    def _send_summary(self, key: SessionKey) -> None:
        session = self.sessions.get(key)
        if session is None or session.summary is None:
            return
        summary, session.summary = session.summary, None
        if summary:
            session.summary_sent = self._clock()
            self.deliver(key, summary.frame(key.session_id))

    def set_state(self, member: Membership, state: Any, state_json: str) -> bool:
        """``member`` sets its presence state; every member (its user's other connections too)
        gets ``presence_state`` at the next flush. False when it is not a member (any more)."""
        session = self.sessions.get(member.key)
        if session is None or session.members.get(member.connection_id) is not member:
            return False
        session.roster.set_state(member, state, state_json)
        session.roster_changed()
        self._queue_state_of(session, member.user_id)
        return True

    def _queue_state_of(self, session: Session, user_id: str) -> None:
        frame = messages.presence_state_frame(
            session_id=session.key.session_id, user_id=user_id, state_json=session.roster.state_json(user_id)
        )
        self.queue_state(session.key, user_id, frame)

    def queue_state(self, key: SessionKey, user_id: str, frame: OutFrame, *, version: int | None = None) -> None:
        """Send ``frame`` (a ``presence_state``) to this node's members of ``key`` at the next
        flush, unless a newer one of the same user replaces it first. Flushes are at most one
        per 50 ms, so a burst of updates reaches each member as a few frames."""
        self._states.add(key, user_id, frame, version)
        if self._states_scheduled:
            return
        if self.schedule is None:
            self.flush_states()
            return
        self._states_scheduled = True
        self.schedule(max(0.0, self._states_sent + STATE_INTERVAL - self._clock()), self.flush_states)

    def flush_states(self) -> None:
        """Deliver every waiting ``presence_state`` frame."""
        self._states_scheduled = False
        self._states_sent = self._clock()
        for key, frames in self._states.take_all():
            for frame, version in frames:
                self.deliver(key, frame, version=version)

    def signal(self, key: SessionKey, frame: OutFrame, *, sender: str, slot_key: str | None) -> int:
        """Hand a ``signal`` to this node's members of ``key`` but connection ``sender``; a newer
        signal of the same sender and ``slot_key`` replaces one still unsent. Returns how many."""
        session = self.sessions.get(key)
        if session is None:
            return 0
        slot: Hashable = (sender, slot_key) if slot_key is not None else object()
        count = 0
        for member in list(session.members.values()):
            if member.connection_id != sender and member.pending is None:
                member.peer.signal(slot, frame)
                count += 1
        return count

    def _flush_states_of(self, key: SessionKey) -> None:
        if self._states:
            for frame, version in self._states.take(key):
                self.deliver(key, frame, version=version)
