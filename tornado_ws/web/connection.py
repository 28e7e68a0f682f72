"""One client's connection: the socket and its user, what its frames mean, what the hub sends it.

A :class:`Connection` holds the verified claims, the rate limits and the token's lifetime; its
membership of a session is a :class:`~tornado_ws.core.registry.Membership`, a separate object
(one per session it is in), whose peer is the Connection itself on ``/ws/<session_id>``. The
handler (:mod:`tornado_ws.web.handler`) upgrades the request, hands the socket to a Connection
and authenticates; from then on the Connection limits, parses and publishes what the client
sends, and leaves its sessions when the socket closes. ``/ws`` connections, in many sessions,
are :class:`~tornado_ws.web.multiplex.MultiplexConnection`.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Awaitable, Hashable

from tornado_ws import hooks
from tornado_ws.auth import AuthError, Claims
from tornado_ws.core.protocol import (
    Join,
    Leave,
    MessageError,
    Ping,
    Publish,
    Refresh,
    Signal,
    parse_client_message,
)
from tornado_ws.core.ratelimit import TokenBucket
from tornado_ws.core.registry import Membership, SessionKey
from tornado_ws.core.server_messages import PONG, OutFrame, error_frame, refreshed_frame
from tornado_ws.errors import CloseCode, ErrorCode
from tornado_ws.transport.websocket import WebSocketConnection
from tornado_ws.web.publishing import SessionFrames
from tornado_ws.web.state import AppState

log = logging.getLogger("tornado_ws")

#: Close codes that may appear as a metric label; any other code a client sends is "other".
_LABELLED_CLOSE_CODES = frozenset(int(c) for c in CloseCode) | {1005, 1006}
#: An unmasked WebSocket ping with no payload, built once.
PING_WIRE = b"\x89\x00"


class Connection(SessionFrames, WebSocketConnection):
    """One authenticated client socket: its claims, limits and memberships.

    This class is the ``/ws/<session_id>`` connection, in exactly one session: it is its own
    membership's peer, so whatever ends the membership closes the socket.
    :class:`~tornado_ws.web.multiplex.MultiplexConnection` (``/ws``) carries many.
    """

    __slots__ = (
        "_bucket",
        "_control_bucket",
        "_expires_at",
        "_join_bucket",
        "_ping_sent_at",
        "_signal_bucket",
        "_signal_refused_at",
        "_slow",
        "claims",
        "connection_id",
        "memberships",
        "state",
    )

    #: Whether frames name their session (``/ws``); on ``/ws/<id>`` the socket is the session.
    multiplexed = False

    def __init__(
        self, state: AppState, sock: socket.socket, *, unread: bytes = b"", head: bytes = b"", registered: bool = False
    ) -> None:
        config = state.config
        super().__init__(
            sock,
            max_message_size=config.max_message_size,
            max_outbound_buffer=config.max_outbound_buffer,
            unread=unread,
            head=head,
            registered=registered,
        )
        self.state = state
        self.connection_id = secrets.token_hex(8)
        #: session id -> this connection's membership of it.
        self.memberships: dict[str, Membership] = {}
        self.claims: Claims | None = None
        self._bucket: TokenBucket | None = None
        self._control_bucket: TokenBucket | None = None
        #: Joins and leaves (/ws) and signals each spend a budget of their own.
        self._join_bucket: TokenBucket | None = None
        self._signal_bucket: TokenBucket | None = None
        self._signal_refused_at = float("-inf")
        #: When the token (plus leeway) runs out, in time.time(); the hub's sweep closes us then.
        self._expires_at: float | None = None
        self._ping_sent_at: float | None = None
        self._slow = False

    def authenticated(self, claims: Claims) -> None:
        """Called by the handler once ``claims`` are verified, before any join."""
        self.claims = claims
        config = self.state.config
        rate = config.rate_limit
        if rate > 0:
            burst = config.rate_burst
            self._bucket = TokenBucket(rate, burst)
            self._control_bucket = TokenBucket(10 * rate, 10 * burst)
            # A page joining its 30 sessions at load must not spend the messages' budget, and a
            # join/leave churn must not go unbounded either.
            self._join_bucket = TokenBucket(10 * rate, max(10 * burst, 2 * config.max_sessions_per_connection))
        if config.signal_rate > 0:
            self._signal_bucket = TokenBucket(config.signal_rate, config.signal_burst)
        self._schedule_expiry(claims)

    def membership_for(self, claims: Claims, session_id: str) -> Membership:
        """A new membership of ``session_id``, recorded here before the broker's join so that
        whatever ends the connection meanwhile ends it too."""
        member = Membership(
            key=SessionKey(claims.org_id, session_id),
            connection_id=self.connection_id,
            user_id=claims.user_id,
            name=claims.name,
            peer=self,
            counts_connection=not self.multiplexed,
        )
        self.memberships[session_id] = member
        return member

    def forget(self, member: Membership) -> None:
        """Drop ``member`` from this connection's table (a refused join, a finished leave)."""
        if self.memberships.get(member.key.session_id) is member:
            del self.memberships[member.key.session_id]

    # -- liveness (driven by the hub's sweeper) ---------------------------------

    def keepalive(self, now: float, wall: float, interval: float, timeout: float) -> None:
        """Close on token expiry (4001); ping a quiet connection; drop one whose ping went
        unanswered for ``timeout``. ``interval`` 0: no pings."""
        if self._expires_at is not None and wall >= self._expires_at:
            self._expires_at = None
            self.close(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        if interval <= 0:
            return
        if self._ping_sent_at is not None:
            if self.last_seen > self._ping_sent_at:
                self._ping_sent_at = None  # it spoke since: alive
            elif now - self._ping_sent_at > timeout:
                log.info("no pong within %.1fs; dropping conn=%s", timeout, self.connection_id)
                self.abort()  # a dead peer will not answer a close handshake either
            return
        if now - self.last_seen >= interval:
            self._ping_sent_at = now
            self.write(PING_WIRE)

    def on_pong(self, payload: bytes) -> None:
        self._count_control_frame()

    def on_ping(self, payload: bytes) -> None:
        self._count_control_frame()

    def _count_control_frame(self) -> None:
        # Control frames never reach on_message, so --rate-limit does not see them; a
        # flood of them is cut here (ten times the message rate, which no client needs).
        if self._control_bucket is not None and not self._control_bucket.allow():
            self.state.metrics.rate_limited += 1
            self._control_bucket = None  # close once
            self.close(CloseCode.POLICY_VIOLATION, "ping flood")

    # -- token lifetime ------------------------------------------------------

    def _schedule_expiry(self, claims: Claims) -> None:
        # Checked by the hub's once-a-second sweep rather than a timer per connection.
        if claims.expires_at is None:
            self._expires_at = None
        else:
            self._expires_at = claims.expires_at + self.state.config.jwt_leeway

    def _refresh(self, current: Claims, token: str) -> Awaitable[None] | None:
        """Replace this connection's claims with a fresh token's, which may narrow them: its
        roles apply from the next frame, and a session it no longer allows is left (4004)."""
        try:
            claims = self.state.verifier.verify(token)
        except AuthError as exc:
            self.send(error_frame(ErrorCode.BAD_REFRESH, f"refresh refused: {exc.reason}"))
            return None
        if (claims.org_id, claims.user_id) != (current.org_id, current.user_id):
            self.send(error_frame(ErrorCode.BAD_REFRESH, "refresh token is for another user or organization"))
            self.close(CloseCode.POLICY_VIOLATION, "bad refresh")
            return None
        members = list(self.memberships.values())
        if self.state.hooks.authorize is None:  # no coroutine for the common case
            refusals = [
                (m, None if hooks.session_allowed(claims, m.key.session_id) else hooks.NOT_IN_TOKEN) for m in members
            ]
            self._apply_refresh(claims, refusals)
            return None
        return self._refresh_through_hook(claims, members)

    async def _refresh_through_hook(self, claims: Claims, members: list[Membership]) -> None:
        refusals: list[tuple[Membership, str | None]] = []
        for member in members:
            try:
                refusals.append((member, await hooks.refusal(self.state.hooks, claims, member.key.session_id)))
            except Exception:
                log.exception(
                    "authorize hook failed at refresh session=%s user=%s", member.key.session_id, member.user_id
                )
                kept = "the refresh could not be authorized; the old token still holds"
                self.send(error_frame(ErrorCode.INTERNAL, kept))
                return
        if not self.closing:  # still connected after the hook
            self._apply_refresh(claims, refusals)

    def _apply_refresh(self, claims: Claims, refusals: list[tuple[Membership, str | None]]) -> None:
        refused = [(m, why) for m, why in refusals if why is not None and self.memberships.get(m.key.session_id) is m]
        if refused and not self.multiplexed:
            self.close(CloseCode.FORBIDDEN, refused[0][1] or "")
            return
        self.claims = claims
        self._schedule_expiry(claims)
        self.send(refreshed_frame(claims.expires_at))
        for member, why in refused:
            self.end_membership(member, CloseCode.FORBIDDEN, why or "")

    # -- frames ---------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # An awaitable holds this connection's next frames until it is done: per-sender order.
        claims = self.claims
        if claims is None or self._slow or not (self.multiplexed or self.memberships):
            return None
        # Parsed before the rate limit, which picks the budget by the frame's type; a frame that
        # does not parse spends the messages' budget.
        try:
            frame = parse_client_message(message)
        except MessageError as exc:
            if self._bucket is not None and not self._bucket.allow():
                self._rate_limited(exc.message_id, exc.session_id)
            else:
                self._error(exc.code, exc.message, exc.message_id, exc.session_id)
            return None
        if isinstance(frame, Signal):
            return self._signal_frame(frame)
        bucket = self._join_bucket if isinstance(frame, (Join, Leave)) else self._bucket
        if bucket is not None and not bucket.allow():
            self._rate_limited(frame.id if isinstance(frame, Publish) else None, getattr(frame, "session", None))
            return None
        if isinstance(frame, (Ping, Refresh)):
            return self._connection_frame(frame, claims)
        if isinstance(frame, (Join, Leave)):
            return self._membership_frame(frame, claims)
        member = self._member_for(frame.session, frame.id if isinstance(frame, Publish) else None)
        if member is None:
            return None
        if isinstance(frame, Publish):
            return self._publish_frame(member, claims, frame)
        return self._set_presence(member, frame)

    def _membership_frame(self, frame: Join | Leave, claims: Claims) -> Awaitable[None] | None:
        self.send(error_frame(ErrorCode.UNKNOWN_TYPE, '"join" and "leave" are frames of /ws; this is /ws/<id>'))
        return None

    def _member_for(self, session: str | None, message_id: str | None) -> Membership | None:
        """The membership a frame is for (None after answering with an error): on ``/ws/<id>``
        the one, and a ``session`` field may only name it."""
        member = next(iter(self.memberships.values()))
        if session is not None and session != member.key.session_id:
            # Never into a session the sender did not name: this socket is in one only.
            self.send(error_frame(ErrorCode.NOT_JOINED, "this connection is in another session", message_id))
            return None
        return member

    def signal(self, slot: Hashable, frame: OutFrame) -> None:
        if self._slow or not self.write_signal(slot, frame.wire):
            self.state.metrics.signals_dropped += 1

    def _connection_frame(self, frame: Ping | Refresh, claims: Claims) -> Awaitable[None] | None:
        if isinstance(frame, Ping):
            self.send(PONG)
            return None
        return self._refresh(claims, frame.token)

    def _error(self, code: str, message: str, message_id: str | None, session_id: str | None) -> None:
        """An ``error`` for the sender; it names the session only where frames do (``/ws``)."""
        self.send(error_frame(code, message, message_id, session_id if self.multiplexed else None))

    def _rate_limited(self, message_id: str | None, session_id: str | None) -> None:
        self.state.metrics.rate_limited += 1
        self._error(ErrorCode.RATE_LIMITED, "too many frames; this one was dropped", message_id, session_id)

    # -- Peer --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        # Server frames are unmasked, so the bytes framed once serve every member.
        if not self._slow:
            self.write(frame.wire)

    def _send(self, wire: bytes, *, durable: bool = True) -> None:
        # Counted per socket write, not per frame: a write carries every frame of a loop pass.
        self.state.metrics.bytes_out += len(wire)
        super()._send(wire, durable=durable)

    def on_slow(self) -> None:
        if not self._slow:
            self._slow = True
            # Not inside the broadcast loop that called us: cut on the next loop pass.
            self._loop.call_soon(self._cut_slow_consumer)

    def _cut_slow_consumer(self) -> None:
        self.state.metrics.slow_consumers += 1
        claims = self.claims
        log.warning(
            "slow consumer cut user=%s conn=%s sessions=%d",
            claims and claims.user_id,
            self.connection_id,
            len(self.memberships),
        )
        for member in list(self.memberships.values()):
            self._leave(member)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    # -- end -----------------------------------------------------------------

    def end_membership(self, member: Membership, code: int, reason: str) -> None:
        """The server ends ``member`` (kick, refresh refusal, stream restart): on ``/ws/<id>``
        that ends the socket, which :meth:`on_closed` then leaves."""
        self.close(code, reason)

    def _leave(self, member: Membership) -> None:
        broker = self.state.broker
        if not broker.leave_now(member):  # a Task per disconnect only when the broker needs I/O
            hooks.spawn(broker.leave(member))

    def _left(self, member: Membership, code: int | str) -> None:
        """``member`` is gone: leave the broker, tell the on_leave hook, log it."""
        self.forget(member)
        self._leave(member)
        if self.claims is not None and self.state.hooks.on_leave is not None:
            hooks.spawn(hooks.observe(self.state.hooks.on_leave, "on_leave", self.claims, member.key.session_id))
        log.info(
            "disconnect session=%s org=%s user=%s conn=%s code=%s",
            member.key.session_id,
            member.key.org_id,
            member.user_id,
            self.connection_id,
            code,
        )

    def on_closed(self) -> None:
        if self.claims is None:
            return
        code = self.server_close_code or self.close_code or 1006
        if self.memberships or self.multiplexed:
            # Clients pick their own close codes: only known ones become label values.
            self.state.metrics.count_disconnect(str(code) if code in _LABELLED_CLOSE_CODES else "other")
        for member in list(self.memberships.values()):
            self._left(member, code)
