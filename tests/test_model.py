"""Model-based test of the session registry: hypothesis drives random joins, leaves, two-tab users,
kicks, resumes, publishes (also to empty sessions), clock ticks and expiries across two orgs, and
after every step the real :class:`~tornado_ws.core.registry.Registry` must agree with a plain model:

- membership, connection counts (total and per user), presence, live and dormant sessions,
  the per-org session cap;
- every frame each connection received, exactly (welcome, replay, presence events, messages with
  their seq and ts), so no member ever misses, reorders or duplicates an event;
- no frame ever reaches a connection of another session or organization.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.recording import Clock, RecordingPeer
from tornado_ws.core.registry import Membership, Registry, SessionKey

ORGS = ("acme", "globex")
SESSIONS = ("a", "b", "c")
USERS = ("u1", "u2", "u3")
#: Fixed per user, as a token's name claim would be.
NAMES: dict[str, str | None] = {"u1": "One", "u2": None, "u3": "Three"}
HISTORY = 3
TTL = 10.0
CAP = 2  # sessions (live or dormant) per org: 2 of the 3 ids, so the cap is hit often
KEYS = [SessionKey(org, sid) for org in ORGS for sid in SESSIONS]


@dataclasses.dataclass
class Conn:
    """One connection as the model sees it, and everything it must have received."""

    member: Membership
    peer: RecordingPeer
    expected: list[dict[str, Any]]
    live: bool = True
    closed: tuple[int, str] | None = None

    @property
    def key(self) -> SessionKey:
        return self.member.key

    @property
    def user(self) -> str:
        return self.member.user_id


@dataclasses.dataclass
class ModelStream:
    epoch: str
    last_activity: float
    last_seq: int = 0
    history: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)

    def recover(self, epoch: str | None, since: int | None) -> tuple[bool, list[dict[str, Any]]]:
        if epoch is None or since is None or epoch != self.epoch or since < 0 or since > self.last_seq:
            return False, []
        if since == self.last_seq:
            return True, []
        if not self.history or self.history[0][0] > since + 1:
            return False, []
        return True, [frame for seq, frame in self.history if seq > since]


def presence_event(kind: str, key: SessionKey, user: str, count: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": kind, "session_id": key.session_id, "user_id": user}
    if NAMES[user] is not None:
        frame["name"] = NAMES[user]
    frame["participant_count"] = count
    return frame


def participants(users: dict[str, int]) -> list[dict[str, str]]:
    out = []
    for user in users:
        entry = {"user_id": user}
        name = NAMES[user]
        if name is not None:
            entry["name"] = name
        out.append(entry)
    return out


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        epochs = itertools.count(1)
        self.registry = Registry(
            history_size=HISTORY,
            history_ttl=TTL,
            max_sessions_per_org=CAP,
            clock=self.clock,
            epoch_factory=lambda: f"epoch-{next(epochs)}",
        )
        self.next_epoch = 1
        self.conn_ids = itertools.count(1)
        self.conns: list[Conn] = []
        # The model: live sessions' members (insertion order = registry order) and user presence,
        # and every stream, live or dormant.
        self.members: dict[SessionKey, list[Conn]] = {}
        self.presence: dict[SessionKey, dict[str, int]] = {}
        self.streams: dict[SessionKey, ModelStream] = {}
        self.data_n = itertools.count()

    # -- model helpers -------------------------------------------------------------------------

    def live_conns(self) -> list[Conn]:
        return [c for c in self.conns if c.live]

    def org_streams(self, org: str) -> int:
        return sum(1 for key in self.streams if key.org_id == org)

    def has_room(self, key: SessionKey) -> bool:
        return key in self.streams or self.org_streams(key.org_id) < CAP

    def new_stream(self) -> ModelStream:
        stream = ModelStream(epoch=f"epoch-{self.next_epoch}", last_activity=self.clock.now)
        self.next_epoch += 1
        return stream

    def broadcast(self, key: SessionKey, frame: dict[str, Any], exclude: Conn | None = None) -> None:
        for conn in self.members.get(key, []):
            if conn is not exclude:
                conn.expected.append(frame)

    def model_leave(self, conn: Conn) -> None:
        key = conn.key
        self.members[key].remove(conn)
        conn.live = False
        users = self.presence[key]
        users[conn.user] -= 1
        last_of_user = users[conn.user] == 0
        if last_of_user:
            del users[conn.user]
        self.streams[key].last_activity = self.clock.now
        if not self.members[key]:
            del self.members[key]
            del self.presence[key]
            # history_ttl > 0 and history_size > 0: the stream stays (dormant).
        elif last_of_user:
            self.broadcast(key, presence_event("user_left", key, conn.user, len(users)))

    # -- rules ---------------------------------------------------------------------------------

    def _join(self, key: SessionKey, user: str, epoch: str | None, since: int | None) -> None:
        assert self.registry.has_room(key) == self.has_room(key)
        if not self.has_room(key):
            return  # the handler refuses it (1013) before the registry sees it
        member = Membership(key, f"c{next(self.conn_ids)}", user, NAMES[user], RecordingPeer())
        conn = Conn(member, member.peer, [])  # type: ignore[arg-type]
        self.conns.append(conn)

        # Model: session (revive a dormant stream or start one), presence, welcome, replay, user_joined.
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.new_stream()
        members = self.members.setdefault(key, [])
        users = self.presence.setdefault(key, {})
        first = user not in users
        users[user] = users.get(user, 0) + 1
        members.append(conn)
        stream.last_activity = self.clock.now
        recovered, replay = stream.recover(epoch, since)
        conn.expected.append(
            {
                "type": "welcome",
                "session_id": key.session_id,
                "user_id": user,
                "org_id": key.org_id,
                "connection_id": member.connection_id,
                "participants": participants(users),
                "participant_count": len(users),
                "seq": stream.last_seq,
                "epoch": stream.epoch,
                "recovered": recovered,
            }
        )
        conn.expected.extend(replay)
        if first:
            self.broadcast(key, presence_event("user_joined", key, user, len(users)), exclude=conn)

        recovery = self.registry.join(member, epoch=epoch, since=since)
        assert recovery.recovered == recovered

    @rule(key=st.sampled_from(KEYS), user=st.sampled_from(USERS))
    def join(self, key: SessionKey, user: str) -> None:
        self._join(key, user, None, None)

    @precondition(lambda self: any(not c.live for c in self.conns))
    @rule(data=st.data(), offset=st.sampled_from([0, 0, 0, -1, -4, 1]))
    def resume(self, data: st.DataObject, offset: int) -> None:
        """A departed connection's user comes back with ``since``/``epoch`` from what it saw."""
        conn = data.draw(st.sampled_from([c for c in self.conns if not c.live]))
        frames = conn.peer.frames
        seqs = [f["seq"] for f in frames if f["type"] == "message"]
        last_seen = seqs[-1] if seqs else frames[0]["seq"]
        self._join(conn.key, conn.user, frames[0]["epoch"], last_seen + offset)

    @precondition(lambda self: self.streams)
    @rule(data=st.data(), user=st.sampled_from(USERS), since=st.integers(min_value=-1, max_value=8))
    def resume_with_the_current_epoch(self, data: st.DataObject, user: str, since: int) -> None:
        """Any ``since`` against a stream's real epoch: replayed only while history covers it."""
        key = data.draw(st.sampled_from(sorted(self.streams)))
        self._join(key, user, self.streams[key].epoch, since)

    @rule(key=st.sampled_from(KEYS), user=st.sampled_from(USERS), since=st.integers(min_value=-1, max_value=12))
    def resume_with_a_stale_epoch(self, key: SessionKey, user: str, since: int) -> None:
        self._join(key, user, "epoch-stale", since)

    @precondition(lambda self: self.live_conns())
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.live_conns()))
        self.model_leave(conn)
        self.registry.leave(conn.member)

    @precondition(lambda self: any(not c.live for c in self.conns))
    @rule(data=st.data())
    def leave_again(self, data: st.DataObject) -> None:
        """Leaving twice (close after a kick or a slow-consumer cut) must be harmless."""
        conn = data.draw(st.sampled_from([c for c in self.conns if not c.live]))
        self.registry.leave(conn.member)

    @precondition(lambda self: self.live_conns())
    @rule(data=st.data())
    def kick(self, data: st.DataObject) -> None:
        """An admin kicks a member's user from its session: every tab of it goes."""
        key, user = data.draw(st.sampled_from(sorted({(c.key, c.user) for c in self.live_conns()})))
        targets = [c for c in self.members.get(key, []) if c.user == user]
        for conn in targets:
            self.model_leave(conn)
            conn.closed = (4003, "kicked")
        assert self.registry.kick(key, user, 4003, "kicked") == len(targets)

    @rule(key=st.sampled_from(KEYS), user=st.sampled_from(USERS))
    def kick_anyone(self, key: SessionKey, user: str) -> None:
        """Kicking someone who is not there closes nothing."""
        if not any(c.user == user for c in self.members.get(key, [])):
            assert self.registry.kick(key, user, 4003, "kicked") == 0

    @rule(key=st.sampled_from(KEYS), user=st.sampled_from((*USERS, "service")))
    def publish(self, key: SessionKey, user: str) -> None:
        """A member's message, or a service's API publish (also to a session nobody is in)."""
        assert self.registry.has_room(key) == self.has_room(key)
        if not self.has_room(key):
            return  # the API answers 429 before the registry sees it
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.new_stream()
        stream.last_seq += 1
        stream.last_activity = self.clock.now
        data = {"org": key.org_id, "session": key.session_id, "n": next(self.data_n)}
        frame: dict[str, Any] = {"type": "message", "session_id": key.session_id, "user_id": user}
        name = NAMES.get(user)
        if name is not None:
            frame["name"] = name
        frame.update({"seq": stream.last_seq, "ts": self.clock.now, "data": data})
        stream.history = [*stream.history, (stream.last_seq, frame)][-HISTORY:]
        self.broadcast(key, frame)

        seq = self.registry.publish(key, user_id=user, name=name, data_json=json.dumps(data, separators=(",", ":")))
        assert seq == stream.last_seq

    @rule(seconds=st.sampled_from([0.5, 6.0, 11.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def quiet_period_then_sweep(self) -> None:
        """Longer than the TTL without activity, then the sweeper runs (what the server does every 5 s)."""
        self.tick(TTL + 1)
        self.expire()

    @rule()
    def expire(self) -> None:
        deadline = self.clock.now - TTL
        stale = [k for k, s in self.streams.items() if k not in self.members and s.last_activity < deadline]
        for key in stale:
            del self.streams[key]
        for key in self.members:
            if self.streams[key].last_activity < deadline:
                self.streams[key].history = []
        assert self.registry.expire() == len(stale)

    # -- checked after every step --------------------------------------------------------------

    @invariant()
    def counts_and_membership_agree(self) -> None:
        live = self.live_conns()
        assert self.registry.connection_count == len(live)
        for org in ORGS:
            for user in USERS:
                expected = sum(1 for c in live if (c.key.org_id, c.user) == (org, user))
                assert self.registry.user_connections(org, user) == expected
        assert set(self.registry.sessions) == set(self.members)
        assert self.registry.dormant_count == len(set(self.streams) - set(self.members))
        for key in KEYS:
            users = self.presence.get(key, {})
            assert self.registry.presence(key) == {
                "participants": participants(users),
                "participant_count": len(users),
            }
            assert self.registry.has_room(key) == self.has_room(key)
            session = self.registry.sessions.get(key)
            if session is not None:
                assert [m.connection_id for m in session.members.values()] == [
                    c.member.connection_id for c in self.members[key]
                ]
                assert session.stream.last_seq == self.streams[key].last_seq

    @invariant()
    def every_connection_saw_exactly_its_events(self) -> None:
        for conn in self.conns:
            assert conn.peer.frames == conn.expected, conn.member.connection_id
            assert conn.peer.closed == conn.closed

    @invariant()
    def nothing_ever_crosses_a_session_or_an_org(self) -> None:
        for conn in self.conns:
            for frame in conn.peer.frames:
                assert frame["session_id"] == conn.key.session_id
                if frame["type"] == "welcome":
                    assert frame["org_id"] == conn.key.org_id
                if frame["type"] == "message":
                    assert frame["data"]["org"] == conn.key.org_id
                    assert frame["data"]["session"] == conn.key.session_id

    @invariant()
    def live_streams_are_gapless(self) -> None:
        for conn in self.live_conns():
            welcome = conn.peer.frames[0]
            seqs = [f["seq"] for f in conn.peer.frames[1:] if f["type"] == "message"]
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate
                if welcome["recovered"] is False:
                    assert seqs[0] == welcome["seq"] + 1


RegistryMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestRegistryModel = RegistryMachine.TestCase
