"""``/ws``: one connection in many sessions.

A :class:`MultiplexConnection` is counted against the connection caps once, when it connects
(``Broker.connect``), and then joins and leaves sessions by frames that name them. Each
membership's peer is a :class:`SessionPeer`: what would close a ``/ws/<id>`` socket (a kick, a
refused refresh, a restarted stream) ends only that membership, with a ``left`` frame carrying
the close code ``/ws/<id>`` would have used. Whatever ends the socket (token expiry, slow
consumer, shutdown, a protocol error) ends every membership, as on ``/ws/<id>``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Hashable
from typing import Any

from tornado_ws import hooks
from tornado_ws.auth import Claims
from tornado_ws.core.protocol import Join, Leave
from tornado_ws.core.registry import Membership
from tornado_ws.core.server_messages import OutFrame, connected_frame, left_frame
from tornado_ws.errors import CloseCode, ErrorCode
from tornado_ws.web import joining
from tornado_ws.web.connection import Connection

log = logging.getLogger("tornado_ws")

NOT_JOINED = "this connection has not joined that session"
NO_SESSION = 'a frame about a session on /ws needs a string "session"'

#: The ``left`` of a ``join`` over ``--max-sessions-per-connection``.
TOO_MANY_SESSIONS = joining.Refusal(
    CloseCode.TRY_AGAIN_LATER, "too many sessions on this connection", "per_connection_session_limit"
)


class SessionPeer:
    """The registry's peer for one membership of a ``/ws`` connection."""

    __slots__ = ("connection", "member")

    def __init__(self, connection: MultiplexConnection, member: Membership) -> None:
        self.connection = connection
        self.member = member

    def send(self, frame: OutFrame) -> None:
        self.connection.send(frame)

    def signal(self, slot: Hashable, frame: OutFrame) -> None:
        self.connection.signal(slot, frame)

    def close(self, code: int, reason: str) -> None:
        self.connection.end_membership(self.member, code, reason)


class MultiplexConnection(Connection):
    """A ``/ws`` connection: frames name their session; the socket outlives each membership."""

    __slots__ = ("_counted",)

    multiplexed = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether Broker.connect counted this connection in (then on_closed counts it out).
        self._counted = False

    def connected(self, claims: Claims) -> None:
        """Counted in by the broker: authenticate and send ``connected``."""
        self._counted = True
        self.state.multiplexed[self] = None
        self.authenticated(claims)
        self.send(
            connected_frame(
                user_id=claims.user_id,
                org_id=claims.org_id,
                connection_id=self.connection_id,
                expires_at=claims.expires_at,
            )
        )

    def membership_for(self, claims: Claims, session_id: str) -> Membership:
        member = super().membership_for(claims, session_id)
        member.peer = SessionPeer(self, member)  # a peer needs its member: made after it
        return member

    # -- frames ---------------------------------------------------------------

    def _membership_frame(self, frame: Join | Leave, claims: Claims) -> Awaitable[None] | None:
        if isinstance(frame, Join):
            return self._join(frame, claims)
        self._leave_frame(frame)
        return None

    def _member_for(self, session: str | None, message_id: str | None) -> Membership | None:
        if session is None:
            self._error(ErrorCode.BAD_FRAME, NO_SESSION, message_id, None)
            return None
        member = self.memberships.get(session)
        if member is None:
            self._error(ErrorCode.NOT_JOINED, NOT_JOINED, message_id, session)
        return member

    def _join(self, frame: Join, claims: Claims) -> Awaitable[None] | None:
        session_id = frame.session
        if session_id in self.memberships:
            self._error(ErrorCode.ALREADY_JOINED, "this connection is in that session already", None, session_id)
            return None
        if len(self.memberships) >= self.state.config.max_sessions_per_connection:
            self._refused(session_id, TOO_MANY_SESSIONS)
            return None
        state = self.state
        if state.hooks.authorize is not None or not state.broker_ready:
            return self._join_session(frame, claims)
        # Without a hook, and with a broker that needs no I/O, no coroutine: the joins a page
        # sends at load are done in one loop pass, and their welcomes leave in one write.
        refusal = joining.check(state, claims, session_id)
        if refusal is not None:
            self._refused(session_id, refusal)
            return None
        state.start_housekeeping()
        member = self.membership_for(claims, session_id)
        joined = joining.join_now(state, member, epoch=frame.epoch, since=frame.since)
        if joined is False:
            return self._finish_join(member, frame, claims)
        if joined is not None:
            self.forget(member)
            self._refused(session_id, joined)
            return None
        self._joined(claims, session_id)
        return None

    async def _join_session(self, frame: Join, claims: Claims) -> None:
        state, session_id = self.state, frame.session
        refusal = await joining.authorize(state, claims, session_id)
        if refusal is not None:
            self._refused(session_id, refusal)
            return
        if self.closing:
            return  # closed (shutdown, say) while the hook ran
        state.start_housekeeping()
        await self._finish_join(self.membership_for(claims, session_id), frame, claims)

    async def _finish_join(self, member: Membership, frame: Join, claims: Claims) -> None:
        refusal = await joining.join(self.state, member, epoch=frame.epoch, since=frame.since)
        if refusal is not None:
            self.forget(member)
            self._refused(frame.session, refusal)
            return
        self._joined(claims, frame.session)

    def _joined(self, claims: Claims, session_id: str) -> None:
        log.info(
            "join session=%s org=%s user=%s conn=%s", session_id, claims.org_id, claims.user_id, self.connection_id
        )
        if self.state.hooks.on_join is not None:
            hooks.spawn(hooks.observe(self.state.hooks.on_join, "on_join", claims, session_id))

    def _refused(self, session_id: str, refusal: joining.Refusal) -> None:
        self.state.metrics.refused.labels(refusal.label).inc()
        log.info("refused join session=%r reason=%s conn=%s", session_id[:140], refusal.reason, self.connection_id)
        self.send(left_frame(session_id=session_id, code=refusal.code, reason=refusal.reason))

    def _leave_frame(self, frame: Leave) -> None:
        member = self.memberships.get(frame.session)
        if member is None:
            self._error(ErrorCode.NOT_JOINED, NOT_JOINED, None, frame.session)
            return
        self.end_membership(member, CloseCode.NORMAL, "left")

    # -- end -----------------------------------------------------------------

    def end_membership(self, member: Membership, code: int, reason: str) -> None:
        if self.memberships.get(member.key.session_id) is not member:
            return  # over already (a kick is announced to the registry and to the node)
        self._left(member, code)
        self.send(left_frame(session_id=member.key.session_id, code=code, reason=reason))

    def on_closed(self) -> None:
        self.state.multiplexed.pop(self, None)
        super().on_closed()
        claims = self.claims
        if claims is not None and self._counted:
            self._counted = False
            hooks.spawn(self.state.broker.disconnect(claims.org_id, claims.user_id, self.connection_id))
