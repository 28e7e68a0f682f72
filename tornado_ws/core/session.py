"""One session and what belongs to it: its key, its members (memberships) and their peers. No I/O.

A :class:`Session` holds the live members of one ``(org, session_id)``, its roster
(:mod:`tornado_ws.core.presence`) and its stream (:mod:`tornado_ws.core.stream`); the
:class:`~tornado_ws.core.registry.Registry` holds every session of a process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any, NamedTuple, Protocol

from tornado_ws.core.presence import Roster, Summary
from tornado_ws.core.protocol import encode_data
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import Stream


class SessionKey(NamedTuple):
    """Sessions are per tenant: the same id in two orgs is two sessions."""

    org_id: str
    session_id: str


class Peer(Protocol):
    """What the hub needs from a connection. ``send`` and ``signal`` must not raise."""

    def send(self, frame: OutFrame) -> None: ...

    def signal(self, slot: Hashable, frame: OutFrame) -> None:
        """An ephemeral frame: it may be dropped, and replaced by a newer one in the same
        ``slot`` until it is sent."""

    def close(self, code: int, reason: str) -> None: ...


@dataclasses.dataclass(eq=False, slots=True)
class Membership:
    """One connection's membership of one session: what the registry keeps per (connection, session)."""

    key: SessionKey
    connection_id: str
    user_id: str
    name: str | None
    peer: Peer
    #: While a multi-node join is in progress, live frames wait here (seq, frame) so the
    #: switch from history to live delivery has no gap and no duplicate.
    pending: list[tuple[int | None, int | None, OutFrame]] | None = dataclasses.field(default=None, repr=False)
    #: The session's presence version its welcome showed (Redis): presence changes up to it,
    #: held or still on their way over pub/sub, are not sent to it again. 0 once a newer one came.
    presence_version: int = 0
    #: True when this membership is its socket's only one (``/ws/<id>``): joining counts the
    #: connection against the caps and leaving releases it. A ``/ws`` socket, in many sessions,
    #: is counted once, when it connects (:meth:`Registry.count_connection`).
    counts_connection: bool = True
    #: This membership's presence state (a JSON object and its text), and when it was set
    #: (:mod:`tornado_ws.core.presence`; 0: never).
    state: Any = dataclasses.field(default=None, repr=False)
    state_json: str | None = dataclasses.field(default=None, repr=False)
    state_tick: int = 0


class Session:
    """Live members of one ``(org, session_id)``, its roster and its stream."""

    def __init__(self, key: SessionKey, stream: Stream) -> None:
        self.key = key
        self.stream = stream
        self.members: dict[str, Membership] = {}
        self.roster = Roster()
        #: A big session's joins and leaves waiting for its next presence_summary.
        self.summary: Summary | None = None
        #: When the last presence_summary went out (clock time).
        self.summary_sent = 0.0
        #: The welcome's roster (participants JSON, how many) while nothing in it changes: in a
        #: big session a join leaves the first --presence-roster-limit participants as they were.
        self._roster_json: tuple[str, int] | None = None

    @property
    def participant_count(self) -> int:
        return len(self.roster)

    def participants(self) -> list[dict[str, Any]]:
        return self.roster.participants()

    def roster_json(self, limit: int) -> tuple[str, int]:
        """The JSON text of the first ``limit`` participants, and how many it lists (cached until
        one of them leaves or changes state, or the cache lists fewer than it should)."""
        cached = self._roster_json
        if cached is None or (cached[1] < limit and cached[1] < len(self.roster)):
            listed = self.roster.participants(limit)
            cached = self._roster_json = (encode_data(listed), len(listed))
        return cached

    def roster_changed(self) -> None:
        self._roster_json = None

    def broadcast(self, frame: OutFrame) -> None:
        # Copy: a peer's send may lead to its removal (slow consumer) mid-loop.
        for member in list(self.members.values()):
            member.peer.send(frame)

    def _add(self, member: Membership) -> bool:
        """Add ``member``; True when it is the user's first connection here."""
        self.members[member.connection_id] = member
        # A new user is appended last: roster_json() sees whether its cache still lists enough.
        return self.roster.add(member)

    def _remove(self, member: Membership) -> tuple[bool, bool]:
        """Remove ``member``: (it was the user's last connection here, the user's state changed)."""
        del self.members[member.connection_id]
        last, state_changed = self.roster.remove(member)
        if last or state_changed:
            self._roster_json = None
        return last, state_changed
