"""The WebSocket endpoint ``/ws/<session_id>``: a thin adapter over the hub.

``get`` enforces the process-wide limits before the upgrade, ``open``
authenticates and joins, ``on_message`` limits, parses and publishes,
``on_close`` leaves. The handler is the hub's :class:`~tornado_ws.hub.Peer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, ClassVar

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler

from . import hooks
from .auth import AuthError, Claims
from .broker import BrokerUnavailable
from .errors import CloseCode, ErrorCode
from .hub import Member, Registry, SessionKey
from .limits import TokenBucket
from .messages import (
    PONG,
    FrameError,
    OutFrame,
    Ping,
    Refresh,
    encode_data,
    error_frame,
    parse_client_frame,
    refreshed_frame,
    valid_session_id,
)
from .state import AppState
from .web import ApiError, RedactedLoggingMixin

log = logging.getLogger("tornado_ws")

#: Receives everything, may send nothing.
VIEWER_ROLE = "viewer"
#: Close codes that may appear as a metric label; any other code a client sends is "other".
_LABELLED_CLOSE_CODES = frozenset(int(c) for c in CloseCode) | {1005, 1006}
#: An unmasked WebSocket ping with no payload, built once.
PING_WIRE = b"\x89\x00"


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _pending_bytes(stream: Any) -> int:
    # IOStream has no public "unsent bytes" accessor; its write buffer is the backlog.
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0


class SessionHandler(RedactedLoggingMixin, WebSocketHandler):
    """One WebSocket connection to one session."""

    #: The registry of the most recent ``make_app()``; tests reset it between cases.
    registry: ClassVar[Registry | None] = None

    member: Member | None = None
    claims: Claims | None = None
    _bucket: TokenBucket | None = None
    _control_bucket: TokenBucket | None = None
    _expiry: object | None = None
    _slow = False
    _server_close_code: int | None = None

    def initialize(self, state: AppState) -> None:
        self.state = state
        self.core = state.registry
        self.broker = state.broker
        self.config = state.config

    # The hub may be mounted in someone else's Application: take WebSocket
    # settings from our Config, not from that Application's settings.
    @property
    def max_message_size(self) -> int:
        return self.config.max_message_size

    @property
    def ping_interval(self) -> float | None:
        # Tornado's own pinger runs a task (two sleeps per interval) per connection; the
        # hub's single sweeper (Hub._keepalive) pings every connection from one timer instead.
        return 0

    # -- liveness (driven by the hub's sweeper) ---------------------------------

    _last_seen = 0.0
    _ping_sent_at: float | None = None

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Ping a quiet connection; drop one whose ping went unanswered for ``timeout``."""
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at > timeout:
                log.info("no pong within %.1fs; dropping conn=%s", timeout, self.member and self.member.connection_id)
                self.abort()  # a dead peer will not answer a close handshake either
            return
        if now - self._last_seen >= interval:
            self._ping_sent_at = now
            self._write(PING_WIRE)

    def on_pong(self, data: bytes) -> None:
        self._ping_sent_at = None
        self._last_seen = IOLoop.current().time()
        self._count_control_frame()

    def on_ping(self, data: bytes) -> None:
        self._count_control_frame()

    def _count_control_frame(self) -> None:
        # Control frames never reach on_message, so --rate-limit does not see them; a
        # flood of them is cut here (ten times the message rate, which no client needs).
        if self._control_bucket is not None and not self._control_bucket.allow():
            self.state.metrics.rate_limited += 1
            self._control_bucket = None  # close once
            self.close(CloseCode.POLICY_VIOLATION, "ping flood")

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Tornado answers bad UTF-8 in the path with a 400 before the upgrade;
        # we want every bad session id refused the same way: close 1008.
        return value.decode("utf-8", errors="replace")

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.state.draining:
            self.state.metrics.refused.labels("shutting_down").inc()
            raise ApiError(503, "shutting_down", "server is shutting down; reconnect elsewhere")
        if self.core.connection_count >= self.config.max_connections:
            self.state.metrics.refused.labels("max_connections").inc()
            raise ApiError(503, "max_connections", "server is at its connection limit; try again later")
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        allowed = self.state.allowed_origins
        ok = super().check_origin(origin) if allowed is None else "*" in allowed or origin.lower() in allowed
        if not ok:
            self.state.metrics.refused.labels("origin").inc()
            log.info("refused origin=%r peer=%s", origin[:200], self.request.remote_ip)
        return ok

    def _token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return self.get_query_argument("token", None)

    def _refuse(self, session_id: str, code: int, reason: str, label: str) -> None:
        self.state.metrics.refused.labels(label).inc()
        log.info("refused session=%r reason=%s peer=%s", session_id[:140], reason, self.request.remote_ip)
        self.close(code, reason)

    async def open(self, *args: str, **kwargs: str) -> None:
        session_id = args[0] if args else ""
        if not valid_session_id(session_id, self.config.max_session_id_length):
            self._refuse(session_id, CloseCode.POLICY_VIOLATION, "invalid session id", "invalid_session_id")
            return
        try:
            claims = self.state.verifier.verify(self._token())
        except AuthError as exc:
            self._refuse(session_id, CloseCode.POLICY_VIOLATION, exc.reason, exc.reason.replace(" ", "_"))
            return
        if not hooks.session_allowed(claims, session_id):
            self._refuse(session_id, CloseCode.FORBIDDEN, "session not allowed by token", "forbidden")
            return
        authorize = self.state.hooks.authorize
        if authorize is not None:
            try:
                allowed = bool(await hooks.call(authorize, claims, session_id))
            except Exception:
                log.exception("authorize hook failed session=%s user=%s", session_id, claims.user_id)
                self._refuse(session_id, CloseCode.INTERNAL_ERROR, "authorization failed", "authorize_error")
                return
            if not allowed:
                self._refuse(session_id, CloseCode.FORBIDDEN, "forbidden", "forbidden")
                return
            if self.ws_connection is None or self.ws_connection.is_closing():
                return  # the client left while the hook ran
        if self.core.user_connections(claims.org_id, claims.user_id) >= self.config.max_connections_per_user:
            self._refuse(session_id, CloseCode.TRY_AGAIN_LATER, "too many connections for this user", "per_user_limit")
            return
        if not self.broker.has_room(SessionKey(claims.org_id, session_id)):
            self._refuse(
                session_id, CloseCode.TRY_AGAIN_LATER, "too many sessions in this organization", "org_session_limit"
            )
            return
        self.state.start_housekeeping()
        self.claims = claims
        self.set_nodelay(True)
        if self.config.rate_limit > 0:
            self._bucket = TokenBucket(self.config.rate_limit, self.config.rate_burst)
            self._control_bucket = TokenBucket(10 * self.config.rate_limit, 10 * self.config.rate_burst)
        self._schedule_expiry(claims)
        self.member = Member(
            key=SessionKey(claims.org_id, session_id),
            connection_id=secrets.token_hex(8),
            user_id=claims.user_id,
            name=claims.name,
            peer=self,
        )
        log.info(
            "connect session=%s org=%s user=%s conn=%s",
            session_id,
            claims.org_id,
            claims.user_id,
            self.member.connection_id,
        )
        try:
            await self.state.ensure_started()
            await self.broker.join(
                self.member,
                epoch=self.get_query_argument("epoch", None),
                since=_int_or_none(self.get_query_argument("since", None)),
            )
        except BrokerUnavailable as exc:
            log.warning("broker unavailable at join session=%s: %s", session_id, exc)
            self.member = None
            self._refuse(session_id, CloseCode.TRY_AGAIN_LATER, "unavailable; try again later", "unavailable")
            return
        self._last_seen = IOLoop.current().time()
        await hooks.observe(self.state.hooks.on_join, "on_join", claims, session_id)

    # -- token lifetime ------------------------------------------------------

    def _schedule_expiry(self, claims: Claims) -> None:
        loop = IOLoop.current()
        if self._expiry is not None:
            loop.remove_timeout(self._expiry)
            self._expiry = None
        if claims.expires_at is not None:
            delay = claims.expires_at + self.config.jwt_leeway - time.time()
            self._expiry = loop.call_later(max(0.0, delay), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def _refresh(self, member: Member, token: str) -> None:
        try:
            claims = self.state.verifier.verify(token)
        except AuthError as exc:
            self.send(error_frame(ErrorCode.BAD_REFRESH, f"refresh refused: {exc.reason}"))
            return
        if (claims.org_id, claims.user_id) != (member.key.org_id, member.user_id):
            self.send(error_frame(ErrorCode.BAD_REFRESH, "refresh token is for another user or organization"))
            self.close(CloseCode.POLICY_VIOLATION, "bad refresh")
            return
        self._schedule_expiry(claims)
        self.send(refreshed_frame(claims.expires_at))

    # -- frames ---------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # Returns an awaitable when work must finish first: Tornado then waits for it
        # before reading this connection's next frame, which keeps per-sender order.
        self._ping_sent_at = None  # any frame proves the peer is alive
        self._last_seen = IOLoop.current().time()
        member, claims = self.member, self.claims
        if member is None or claims is None or self._slow:
            return None
        if self._bucket is not None and not self._bucket.allow():
            self.state.metrics.rate_limited += 1
            self.send(error_frame(ErrorCode.RATE_LIMITED, "too many frames; this one was dropped"))
            return None
        try:
            frame = parse_client_frame(message)
        except FrameError as exc:
            self.send(error_frame(exc.code, exc.message))
            return None
        if isinstance(frame, Ping):
            self.send(PONG)
        elif isinstance(frame, Refresh):
            self._refresh(member, frame.token)
        elif VIEWER_ROLE in claims.roles:
            self.send(error_frame(ErrorCode.FORBIDDEN, "viewers may not send messages"))
        elif self.state.hooks.on_message is not None:
            return self._publish_through_hook(member, claims, frame.data_json)
        else:
            return self._publish_fast(member, frame.data_json)
        return None

    def _publish_fast(self, member: Member, data_json: str) -> Awaitable[None] | None:
        """Publish without a coroutine when the broker can do it synchronously (memory)."""
        try:
            started = time.perf_counter()
            seq = self.broker.publish_now(member.key, user_id=member.user_id, name=member.name, data_json=data_json)
        except Exception:
            log.exception("failed to publish session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered"))
            return None
        if seq is None:
            return self._publish(member, data_json)
        self.state.metrics.messages_in += 1
        self.state.metrics.fanout_seconds.observe(time.perf_counter() - started)
        return None

    async def _publish(self, member: Member, data_json: str) -> None:
        try:
            started = time.perf_counter()
            await self.broker.publish(member.key, user_id=member.user_id, name=member.name, data_json=data_json)
            self.state.metrics.messages_in += 1
            self.state.metrics.fanout_seconds.observe(time.perf_counter() - started)
        except BrokerUnavailable as exc:
            log.warning("publish failed session=%s: %s", member.key.session_id, exc)
            self.send(
                error_frame(ErrorCode.UNAVAILABLE, "the message broker is unreachable; the frame was not delivered")
            )
        except Exception:
            log.exception("failed to publish session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered"))

    async def _publish_through_hook(self, member: Member, claims: Claims, data_json: str) -> None:
        hook = self.state.hooks.on_message
        assert hook is not None
        data = json.loads(data_json)
        try:
            result = await hooks.call(hook, claims, member.key.session_id, data)
            if result is not None:
                data_json = encode_data(result)
        except hooks.Reject as exc:
            self.send(error_frame(exc.code, exc.message))
            return
        except Exception:
            log.exception("on_message hook failed session=%s user=%s", member.key.session_id, member.user_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered"))
            return
        if self.member is member:  # still connected after the hook
            await self._publish(member, data_json)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self._server_close_code is None:
            self._server_close_code = code
        super().close(code, reason)

    def on_close(self) -> None:
        if self._expiry is not None:
            IOLoop.current().remove_timeout(self._expiry)
            self._expiry = None
        code = self._server_close_code or self.close_code or 1006
        member = self.member
        if member is None:
            return
        # Clients pick their own close codes: only known ones become label values.
        self.state.metrics.disconnects.labels(str(code) if code in _LABELLED_CLOSE_CODES else "other").inc()
        hooks.spawn(self.broker.leave(member))
        self.member = None
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

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (as a dead network would)."""
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        if stream is not None:
            stream.close()

    # -- Peer --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        # Server frames are unmasked, so the bytes framed once serve every member.
        self._write(frame.wire)

    def _write(self, wire: bytes) -> None:
        conn = self.ws_connection
        if self._slow or conn is None or conn.is_closing():
            return
        stream: Any = getattr(conn, "stream", None)
        if stream is None:
            return
        self.state.metrics.bytes_out += len(wire)
        if type(stream) is IOStream and not _pending_bytes(stream):
            # Fast path: nothing queued, so the bytes go straight to the socket. IOStream.write
            # would cost a Future, a buffer append and a callback per recipient; it still takes
            # whatever the kernel does not accept at once (and any error, which it handles).
            try:
                sent = stream.socket.send(wire)
            except OSError:  # EAGAIN, or an error IOStream will meet and handle its own way
                sent = 0
            if sent == len(wire):
                return
            wire = wire[sent:]
        with contextlib.suppress(StreamClosedError):
            stream.write(wire)
        if _pending_bytes(stream) > self.config.max_outbound_buffer:
            # Not inside the broadcast loop that called us: cut on the next loop pass.
            self._slow = True
            IOLoop.current().add_callback(self._cut_slow_consumer)

    def _cut_slow_consumer(self) -> None:
        member = self.member
        self.state.metrics.slow_consumers += 1
        if member is not None:
            log.warning(
                "slow consumer cut session=%s user=%s conn=%s",
                member.key.session_id,
                member.user_id,
                member.connection_id,
            )
            hooks.spawn(self.broker.leave(member))
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
