"""One client's connection: the socket and its user, what its frames mean, what the hub sends it.

A :class:`Connection` is the registry's :class:`~tornado_ws.core.registry.Peer`: it holds the
verified claims, the rate limits and the token's lifetime; its membership of a session is a
:class:`~tornado_ws.core.registry.Membership`, a separate object (one per session it is in).
The handler (:mod:`tornado_ws.web.handler`) upgrades the request, hands the socket to a
Connection and authenticates; from then on the Connection limits, parses and publishes what the
client sends, and leaves its session when the socket closes.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Awaitable

from tornado_ws import hooks
from tornado_ws.auth import AuthError, Claims
from tornado_ws.brokers.base import BrokerUnavailable, Published
from tornado_ws.core.protocol import (
    PONG,
    MessageError,
    OutFrame,
    Ping,
    Publish,
    Refresh,
    ack_frame,
    encode_data,
    error_frame,
    message_id_of,
    parse_client_message,
    refreshed_frame,
)
from tornado_ws.core.ratelimit import TokenBucket
from tornado_ws.core.registry import Membership
from tornado_ws.errors import CloseCode, ErrorCode
from tornado_ws.transport.websocket import WebSocketConnection
from tornado_ws.web.state import AppState

log = logging.getLogger("tornado_ws")

#: Receives everything, may send nothing.
VIEWER_ROLE = "viewer"
#: Close codes that may appear as a metric label; any other code a client sends is "other".
_LABELLED_CLOSE_CODES = frozenset(int(c) for c in CloseCode) | {1005, 1006}
#: An unmasked WebSocket ping with no payload, built once.
PING_WIRE = b"\x89\x00"


class Connection(WebSocketConnection):
    """A connection that has joined (or is joining) one session."""

    __slots__ = ("_bucket", "_control_bucket", "_expires_at", "_ping_sent_at", "_slow", "claims", "membership", "state")

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
        self.membership: Membership | None = None
        self.claims: Claims | None = None
        self._bucket: TokenBucket | None = None
        self._control_bucket: TokenBucket | None = None
        #: When the token (plus leeway) runs out, in time.time(); the hub's sweep closes us then.
        self._expires_at: float | None = None
        self._ping_sent_at: float | None = None
        self._slow = False

    def joined(self, member: Membership, claims: Claims) -> None:
        """Called by the handler once ``claims`` are verified, before the broker join."""
        self.membership = member
        self.claims = claims
        rate = self.state.config.rate_limit
        if rate > 0:
            burst = self.state.config.rate_burst
            self._bucket = TokenBucket(rate, burst)
            self._control_bucket = TokenBucket(10 * rate, 10 * burst)
        self._schedule_expiry(claims)

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
                membership = self.membership
                log.info("no pong within %.1fs; dropping conn=%s", timeout, membership and membership.connection_id)
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

    def _refresh(self, member: Membership, token: str) -> Awaitable[None] | None:
        """Replace this connection's claims with a fresh token's, which may narrow them: its
        roles apply from the next frame, and a session it no longer allows is left (4004)."""
        try:
            claims = self.state.verifier.verify(token)
        except AuthError as exc:
            self.send(error_frame(ErrorCode.BAD_REFRESH, f"refresh refused: {exc.reason}"))
            return None
        if (claims.org_id, claims.user_id) != (member.key.org_id, member.user_id):
            self.send(error_frame(ErrorCode.BAD_REFRESH, "refresh token is for another user or organization"))
            self.close(CloseCode.POLICY_VIOLATION, "bad refresh")
            return None
        if self.state.hooks.authorize is None:  # no coroutine for the common case
            allowed = hooks.session_allowed(claims, member.key.session_id)
            self._apply_refresh(claims, None if allowed else hooks.NOT_IN_TOKEN)
            return None
        return self._refresh_through_hook(member, claims)

    async def _refresh_through_hook(self, member: Membership, claims: Claims) -> None:
        try:
            refused = await hooks.refusal(self.state.hooks, claims, member.key.session_id)
        except Exception:
            log.exception("authorize hook failed at refresh session=%s user=%s", member.key.session_id, member.user_id)
            self.send(error_frame(ErrorCode.INTERNAL, "the refresh could not be authorized; the old token still holds"))
            return
        if self.membership is member:  # still connected after the hook
            self._apply_refresh(claims, refused)

    def _apply_refresh(self, claims: Claims, refused: str | None) -> None:
        if refused is not None:
            self.close(CloseCode.FORBIDDEN, refused)
            return
        self.claims = claims
        self._schedule_expiry(claims)
        self.send(refreshed_frame(claims.expires_at))

    # -- frames ---------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # An awaitable holds this connection's next frames until it is done: per-sender order.
        member, claims = self.membership, self.claims
        if member is None or claims is None or self._slow:
            return None
        if self._bucket is not None and not self._bucket.allow():
            self.state.metrics.rate_limited += 1
            # The id says which message was dropped; reading it parses only frames that hold "id".
            dropped = "too many frames; this one was dropped"
            self.send(error_frame(ErrorCode.RATE_LIMITED, dropped, message_id_of(message)))
            return None
        try:
            frame = parse_client_message(message)
        except MessageError as exc:
            self.send(error_frame(exc.code, exc.message, exc.message_id))
            return None
        if isinstance(frame, Ping):
            self.send(PONG)
        elif isinstance(frame, Refresh):
            return self._refresh(member, frame.token)
        elif VIEWER_ROLE in claims.roles:
            self.send(error_frame(ErrorCode.FORBIDDEN, "viewers may not send messages", frame.id))
        elif self.state.hooks.on_message is not None:
            return self._publish_through_hook(member, claims, frame)
        elif frame.id is not None:
            return self._publish_once_fast(member, frame.data_json, frame.id)
        else:
            return self._publish_fast(member, frame.data_json)
        return None

    def _publish_fast(self, member: Membership, data_json: str) -> Awaitable[None] | None:
        """Publish without a coroutine when the broker can do it synchronously (memory)."""
        try:
            started = time.perf_counter()
            seq = self.state.broker.publish_now(
                member.key, user_id=member.user_id, name=member.name, data_json=data_json
            )
        except Exception:
            log.exception("failed to publish session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered"))
            return None
        if seq is None:
            return self._publish(member, data_json)
        self.state.metrics.messages_in += 1
        self.state.metrics.fanout_seconds.observe(time.perf_counter() - started)
        return None

    def _publish_once_fast(self, member: Membership, data_json: str, message_id: str) -> Awaitable[None] | None:
        """A message with an id: published once per (user, id) within the window, then acked."""
        try:
            started = time.perf_counter()
            published = self.state.broker.publish_once_now(
                member.key, user_id=member.user_id, name=member.name, data_json=data_json, message_id=message_id
            )
        except Exception:
            log.exception("failed to publish session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered", message_id))
            return None
        if published is None:
            return self._publish(member, data_json, message_id)
        self._acknowledge(member, message_id, published, started)
        return None

    def _acknowledge(self, member: Membership, message_id: str, published: Published, started: float) -> None:
        if not published.duplicate:
            self.state.metrics.messages_in += 1
            self.state.metrics.fanout_seconds.observe(time.perf_counter() - started)
        self.send(
            ack_frame(
                session_id=member.key.session_id,
                message_id=message_id,
                seq=published.seq,
                duplicate=published.duplicate,
            )
        )

    async def _publish(self, member: Membership, data_json: str, message_id: str | None = None) -> None:
        broker = self.state.broker
        try:
            started = time.perf_counter()
            if message_id is None:
                await broker.publish(member.key, user_id=member.user_id, name=member.name, data_json=data_json)
                self.state.metrics.messages_in += 1
                self.state.metrics.fanout_seconds.observe(time.perf_counter() - started)
            else:
                published = await broker.publish_once(
                    member.key, user_id=member.user_id, name=member.name, data_json=data_json, message_id=message_id
                )
                self._acknowledge(member, message_id, published, started)
        except BrokerUnavailable as exc:
            log.warning("publish failed session=%s: %s", member.key.session_id, exc)
            self.send(
                error_frame(
                    ErrorCode.UNAVAILABLE, "the message broker is unreachable; the frame was not delivered", message_id
                )
            )
        except Exception:
            log.exception("failed to publish session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered", message_id))

    async def _publish_through_hook(self, member: Membership, claims: Claims, frame: Publish) -> None:
        hook = self.state.hooks.on_message
        assert hook is not None
        data_json, message_id = frame.data_json, frame.id
        data = json.loads(data_json)
        try:
            result = await hooks.call(hook, claims, member.key.session_id, data)
            if result is not None:
                data_json = encode_data(result)
        except hooks.Reject as exc:
            self.send(error_frame(exc.code, exc.message, message_id))
            return
        except Exception:
            log.exception("on_message hook failed session=%s user=%s", member.key.session_id, member.user_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered", message_id))
            return
        if self.membership is member:  # still connected after the hook
            await self._publish(member, data_json, message_id)

    # -- Peer --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        # Server frames are unmasked, so the bytes framed once serve every member.
        if not self._slow:
            self.write(frame.wire)

    def _send(self, wire: bytes) -> None:
        # Counted per socket write, not per frame: a write carries every frame of a loop pass.
        self.state.metrics.bytes_out += len(wire)
        super()._send(wire)

    def on_slow(self) -> None:
        if not self._slow:
            self._slow = True
            # Not inside the broadcast loop that called us: cut on the next loop pass.
            self._loop.call_soon(self._cut_slow_consumer)

    def _cut_slow_consumer(self) -> None:
        member = self.membership
        self.state.metrics.slow_consumers += 1
        if member is not None:
            log.warning(
                "slow consumer cut session=%s user=%s conn=%s",
                member.key.session_id,
                member.user_id,
                member.connection_id,
            )
            self._leave(member)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    # -- end -----------------------------------------------------------------

    def _leave(self, member: Membership) -> None:
        broker = self.state.broker
        if not broker.leave_now(member):  # a Task per disconnect only when the broker needs I/O
            hooks.spawn(broker.leave(member))

    def on_closed(self) -> None:
        member = self.membership
        if member is None:
            return
        code = self.server_close_code or self.close_code or 1006
        # Clients pick their own close codes: only known ones become label values.
        self.state.metrics.count_disconnect(str(code) if code in _LABELLED_CLOSE_CODES else "other")
        self._leave(member)
        self.membership = None
        if self.claims is not None and self.state.hooks.on_leave is not None:
            hooks.spawn(hooks.observe(self.state.hooks.on_leave, "on_leave", self.claims, member.key.session_id))
        log.info(
            "disconnect session=%s org=%s user=%s conn=%s code=%s",
            member.key.session_id,
            member.key.org_id,
            member.user_id,
            member.connection_id,
            code,
        )
