"""The session registry: membership, presence, sequencing and fan-out. No I/O.

Everything here runs synchronously on the caller's thread (the event loop in
the server). That is what makes the order total: ``publish`` takes the next
seq and hands the one encoded frame to every member before it returns, so
no two publishes can interleave their deliveries.

Connections are reached through the :class:`Peer` protocol; the server's
``Connection`` implements it, unit tests use plain recording objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from tornado_ws.core import server_messages as messages
from tornado_ws.core.presence import STATE_INTERVAL, PresenceFanout, StateBatch
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.session import Membership, Peer, Session, SessionKey
from tornado_ws.core.stream import PublishedIds, Recovery, Stream, new_epoch

__all__ = ["STATE_INTERVAL", "Membership", "Peer", "Registry", "Session", "SessionKey"]
#: Fewest message ids one session remembers (``10 * history_size`` when that is more).
MIN_IDS_PER_SESSION = 1000


class Registry(PresenceFanout):
    """All sessions of one process, plus recently emptied streams kept for resume.

    A session with no members leaves :attr:`sessions` at once; its stream
    (epoch, seq, history) waits in a dormant table for ``history_ttl`` seconds
    after its last activity so a lone user who drops can still resume.
    """

    def __init__(
        self,
        *,
        history_size: int = 100,
        history_ttl: float = 300.0,
        max_sessions_per_org: int = 1000,
        max_connections_per_user: int = 8,
        max_connections_per_org: int = 10_000,
        idempotency_window: float | None = None,
        roster_limit: int = 1000,
        clock: Callable[[], float] = time.time,
        epoch_factory: Callable[[], str] = new_epoch,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        #: Seconds a message id is remembered (None: ``history_ttl``; 0: duplicates not detected).
        #: An id lives in its session's stream, so never longer than the stream itself.
        self.idempotency_window = history_ttl if idempotency_window is None else idempotency_window
        self.max_ids_per_session = max(MIN_IDS_PER_SESSION, 10 * history_size)
        self.max_sessions_per_org = max_sessions_per_org
        self.max_connections_per_user = max_connections_per_user
        #: Connections of one org in this process; 0 turns the cap off.
        self.max_connections_per_org = max_connections_per_org
        #: Above this many participants a welcome lists only the first ones and joins and leaves
        #: go out as one presence_summary per second (--presence-roster-limit).
        self.roster_limit = roster_limit
        self._clock = clock
        self._epoch_factory = epoch_factory
        #: Runs a callback after a delay (seconds) on the owner's loop; None: at once. What lets
        #: presence_state and presence_summary frames wait to be coalesced.
        self.schedule = schedule
        self._states = StateBatch()
        self._states_scheduled = False
        self._states_sent = 0.0
        self.sessions: dict[SessionKey, Session] = {}
        self._dormant: dict[SessionKey, Stream] = {}
        self._per_user: dict[tuple[str, str], int] = {}
        self._per_org: dict[str, int] = {}
        #: (session, user) -> when its ban ends (clock time); kick(ban_seconds=...) fills it.
        self._bans: dict[tuple[SessionKey, str], float] = {}
        #: Streams (live or dormant) per org: what --max-sessions-per-org caps.
        self._org_streams: dict[str, int] = {}
        self._connections = 0
        #: Message frames handed to members since start (one per recipient).
        self.deliveries = 0

    # -- queries -----------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return self._connections

    def user_connections(self, org_id: str, user_id: str) -> int:
        """Open connections of one user of one org, across all its sessions."""
        return self._per_user.get((org_id, user_id), 0)

    def org_connections(self, org_id: str) -> int:
        """Open connections of one org in this process, across all its sessions."""
        return self._per_org.get(org_id, 0)

    def org_full(self, org_id: str) -> bool:
        """True when the org's next connection would exceed ``max_connections_per_org``."""
        cap = self.max_connections_per_org
        return cap > 0 and self._per_org.get(org_id, 0) >= cap

    def banned(self, key: SessionKey, user_id: str) -> bool:
        """Whether ``user_id`` is banned from session ``key`` right now."""
        until = self._bans.get((key, user_id))
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._bans[(key, user_id)]
        return False

    @property
    def dormant_count(self) -> int:
        return len(self._dormant)

    def members(self) -> Iterator[Membership]:
        for session in list(self.sessions.values()):
            yield from list(session.members.values())

    def presence(self, key: SessionKey) -> dict[str, Any]:
        session = self.sessions.get(key)
        participants = session.participants() if session else []
        return {"participants": participants, "participant_count": len(participants)}

    # -- membership --------------------------------------------------------

    def has_room(self, key: SessionKey) -> bool:
        """False when ``key`` would be a new session and its org is at ``max_sessions_per_org``."""
        if key in self.sessions or key in self._dormant:
            return True
        return self._org_streams.get(key.org_id, 0) < self.max_sessions_per_org

    def _new_stream(self, key: SessionKey) -> Stream:
        self._org_streams[key.org_id] = self._org_streams.get(key.org_id, 0) + 1
        return Stream(self.history_size, self._clock(), self._epoch_factory)

    def _drop_stream(self, key: SessionKey) -> None:
        remaining = self._org_streams.get(key.org_id, 0) - 1
        if remaining > 0:
            self._org_streams[key.org_id] = remaining
        else:
            self._org_streams.pop(key.org_id, None)

    def _session_for(self, key: SessionKey) -> Session:
        session = self.sessions.get(key)
        if session is None:
            stream = self._dormant.pop(key, None)
            if stream is None:
                stream = self._new_stream(key)
            session = self.sessions[key] = Session(key, stream)
        return session

    def join(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        """Add ``member``: it gets ``welcome``, then any recovered frames; others get ``user_joined``
        (or, in a session over the roster limit, a later ``presence_summary``).

        Every frame is built before anything changes: a claim no frame can carry (a lone
        surrogate in ``name``) raises here and leaves the registry as it was.
        """
        key = member.key
        now = self._clock()
        session = self.sessions.get(key)
        stream = session.stream if session is not None else self._dormant.get(key)
        if stream is None:
            stream = Stream(self.history_size, now, self._epoch_factory)
        first = session is None or member.user_id not in session.roster
        count = (0 if session is None else session.participant_count) + first
        recovery = stream.recover(epoch, since)
        welcome = messages.welcome_frame(
            session_id=key.session_id,
            user_id=member.user_id,
            org_id=key.org_id,
            connection_id=member.connection_id,
            **self.welcome_roster(session, member, count),
            seq=stream.last_seq,
            epoch=stream.epoch,
            recovered=recovery.recovered,
        )
        if member.name is not None:
            # Its user_joined or user_left may carry the name: prove it fits a frame now.
            member.name.encode("utf-8")
        if session is None:
            if self._dormant.pop(key, None) is None:
                self._org_streams[key.org_id] = self._org_streams.get(key.org_id, 0) + 1
            session = self.sessions[key] = Session(key, stream)
        session._add(member)
        self._count(member, +1)
        stream.touch(now)
        member.peer.send(welcome)
        for frame in recovery.frames:
            member.peer.send(frame)
        if first:
            self.announce(key, "user_joined", member.user_id, member.name, count, member.connection_id)
        return recovery

    def welcome_roster(self, session: Session | None, member: Membership, count: int) -> dict[str, Any]:
        """The welcome's ``participants`` (and ``participant_count`` when truncated) for a member
        joining ``session`` as one of ``count`` participants."""
        if session is not None and count > self.roster_limit:
            listed, _ = session.roster_json(self.roster_limit)
            return {"participants": listed, "participant_count": count}
        participants = session.participants() if session is not None else []
        if session is None or member.user_id not in session.roster:
            participants.append(messages.participant(member.user_id, member.name))
        return {"participants": participants}

    def leave(self, member: Membership) -> None:
        """Remove ``member``; safe to call twice. The last one out empties the session."""
        session = self.sessions.get(member.key)
        if session is None or session.members.get(member.connection_id) is not member:
            return
        key = member.key
        last, state_changed = session._remove(member)
        self._count(member, -1)
        session.stream.touch(self._clock())
        if not session.members:
            self._states.discard(key, member.user_id)
            self._retire(session)
        elif last:
            self._states.discard(key, member.user_id)
            self.announce(key, "user_left", member.user_id, member.name, session.participant_count, None)
        elif state_changed:
            self._queue_state_of(session, member.user_id)

    def _count(self, member: Membership, delta: int) -> None:
        if member.counts_connection:
            self.count_connection(member.key.org_id, member.user_id, delta)

    def count_connection(self, org_id: str, user_id: str, delta: int) -> None:
        """Count a connection in (+1) or out (-1) of the caps: what a join of ``/ws/<id>`` does
        itself, and what a ``/ws`` connection does once for all its sessions."""
        self._connections += delta
        _add_to(self._per_user, (org_id, user_id), delta)
        _add_to(self._per_org, org_id, delta)

    def ban(self, key: SessionKey, user_id: str, seconds: float) -> None:
        """Refuse ``user_id``'s joins of ``key`` for ``seconds`` (a later ban replaces it; 0: none)."""
        if seconds > 0:
            self._bans[(key, user_id)] = self._clock() + seconds

    def kick(self, key: SessionKey, user_id: str, code: int, reason: str) -> int:
        """Remove every connection of ``user_id`` from session ``key`` and close them; returns how many."""
        session = self.sessions.get(key)
        if session is None:
            return 0
        targets = [m for m in session.members.values() if m.user_id == user_id]
        for member in targets:
            self.leave(member)  # first, so user_left goes out now, not after the close handshake
            member.peer.close(code, reason)
        return len(targets)

    def _retire(self, session: Session) -> None:
        del self.sessions[session.key]
        if self.history_ttl > 0 and self.history_size > 0:
            self._dormant[session.key] = session.stream
        else:
            self._drop_stream(session.key)

    # -- messages ----------------------------------------------------------

    def publish(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str | None = None
    ) -> int:
        """Sequence ``data_json`` in session ``key`` and deliver it to every member.

        ``message_id`` only goes into the frame; :meth:`publish_once` is what remembers it."""
        session = self.sessions.get(key)
        stream = session.stream if session is not None else self._dormant.get(key)  # hot: one lookup
        now = self._clock()
        seq = stream.next_seq() if stream is not None else 1
        # The frame first: one that cannot be built must not leave a new stream behind.
        frame = messages.message_frame(
            session_id=key.session_id,
            user_id=user_id,
            name=name,
            seq=seq,
            ts=now,
            data_json=data_json,
            message_id=message_id,
        )
        if stream is None:
            # A publish to a session nobody is in still starts its stream, so a
            # member who joins later can resume from it.
            stream = self._dormant[key] = self._new_stream(key)
        stream.append(seq, frame, now)
        if session is not None:
            self.deliveries += len(session.members)
            session.broadcast(frame)
        return seq

    def _stream_of(self, key: SessionKey) -> Stream | None:
        """The stream of ``key``: its live session's, or a dormant one kept for resume."""
        session = self.sessions.get(key)
        return session.stream if session is not None else self._dormant.get(key)

    def published_seq(self, key: SessionKey, user_id: str, message_id: str) -> int | None:
        """The seq of ``user_id``'s message ``message_id`` in ``key`` within the window, or None."""
        window = self.idempotency_window
        stream = self._stream_of(key)
        if window <= 0 or stream is None or stream.ids is None:
            return None
        return stream.ids.seq_of(user_id, message_id, self._clock() - window)

    def publish_once(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> tuple[int, bool]:
        """:meth:`publish` unless ``user_id`` published ``message_id`` in ``key`` within the
        idempotency window: then nothing is sent and the answer is ``(original seq, True)``."""
        seq = self.published_seq(key, user_id, message_id)
        if seq is not None:
            return seq, True
        seq = self.publish(key, user_id=user_id, name=name, data_json=data_json, message_id=message_id)
        stream = self._stream_of(key)
        if self.idempotency_window > 0 and stream is not None:  # publish() made one if there was none
            if stream.ids is None:
                stream.ids = PublishedIds(self.max_ids_per_session)
            stream.ids.add(user_id, message_id, seq, stream.last_activity)
        return seq, False

    # -- driven by a multi-node broker ----------------------------------------
    # The broker owns order, history and global presence; this node only keeps
    # its own connections and fans frames out to them.

    def attach(self, member: Membership) -> bool:
        """Add ``member`` locally with live delivery held back; True if the session is new on this node."""
        new = member.key not in self.sessions
        session = self._session_for(member.key)
        member.pending = []
        session._add(member)
        self._count(member, +1)
        return new

    def release(self, member: Membership, after_seq: int) -> None:
        """Start live delivery: send the held frames newer than the snapshot it got (messages
        after ``after_seq``, presence changes after ``member.presence_version``)."""
        held, member.pending = member.pending or [], None
        for seq, version, frame in held:
            if seq is not None and seq <= after_seq:
                continue
            if version is not None and not _newer_presence(member, version):
                continue
            member.peer.send(frame)

    def detach(self, member: Membership) -> bool:
        """Remove ``member`` locally without announcing anything; True if the session is now empty here."""
        session = self.sessions.get(member.key)
        if session is None or session.members.get(member.connection_id) is not member:
            return False
        session._remove(member)
        self._count(member, -1)
        if session.members:
            return False
        self._retire(session)
        return True

    def deliver(
        self,
        key: SessionKey,
        frame: OutFrame,
        *,
        seq: int | None = None,
        exclude: str | None = None,
        version: int | None = None,
    ) -> None:
        """Fan a frame out to this node's members of ``key``: a message sequenced elsewhere
        (``seq``), or a presence change with its ``version`` (what a joining member's welcome may
        show already)."""
        session = self.sessions.get(key)
        if session is None:
            return
        if seq is not None:
            self.deliveries += len(session.members)
        for member in list(session.members.values()):
            if member.connection_id == exclude:
                continue
            if version is not None and member.presence_version and not _newer_presence(member, version):
                continue  # its welcome showed this change already
            if member.pending is not None:
                member.pending.append((seq, version, frame))
            else:
                member.peer.send(frame)

    def local_members(self, key: SessionKey, user_id: str | None = None) -> list[Membership]:
        session = self.sessions.get(key)
        if session is None:
            return []
        return [m for m in session.members.values() if user_id is None or m.user_id == user_id]

    # -- housekeeping ------------------------------------------------------

    def expire(self) -> int:
        """Drop history idle for longer than ``history_ttl``; returns streams dropped."""
        deadline = self._clock() - self.history_ttl
        stale = [key for key, stream in self._dormant.items() if stream.last_activity < deadline]
        for key in stale:
            del self._dormant[key]
            self._drop_stream(key)
        for session in self.sessions.values():
            if session.stream.last_activity < deadline:
                session.stream.forget_history()
        now = self._clock()
        id_deadline = now - self.idempotency_window
        for stream in [*(s.stream for s in self.sessions.values()), *self._dormant.values()]:
            if stream.ids is not None:
                stream.ids.expire(id_deadline)
        for ban in [ban for ban, until in self._bans.items() if until <= now]:
            del self._bans[ban]
        return len(stale)

    def close_all(self, code: int, reason: str) -> None:
        """Ask every connection to close (shutdown); their handlers then call :meth:`leave`."""
        for member in list(self.members()):
            member.peer.close(code, reason)

    def reset(self) -> None:
        """Forget everything (tests use this between cases)."""
        self.sessions.clear()
        self._dormant.clear()
        self._per_user.clear()
        self._per_org.clear()
        self._bans.clear()
        self._org_streams.clear()
        self._states = StateBatch()
        self._states_scheduled = False
        self._connections = 0


def _newer_presence(member: Membership, version: int) -> bool:
    """Whether a presence change of ``version`` is news to ``member``. Changes reach a node in the
    order of their versions, so once one newer than its welcome's arrives, every older one has:
    the check is off from then on (and a counter that restarted cannot hide later changes)."""
    if version <= member.presence_version:
        return False
    member.presence_version = 0
    return True


def _add_to(counts: dict[Any, int], key: Any, delta: int) -> None:
    remaining = counts.get(key, 0) + delta
    if remaining:
        counts[key] = remaining
    else:
        del counts[key]
