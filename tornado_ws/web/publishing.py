"""What a member's frames do in its session: publish (acked, idempotent, through the
``on_message`` hook), set its presence state, send signals.

A part of :class:`~tornado_ws.web.connection.Connection`, apart so each file reads on its own:
the connection decides which membership a frame is for and whether its budget allows it; this
takes it from there to the broker, and answers the sender.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from tornado_ws import hooks
from tornado_ws.auth import Claims
from tornado_ws.brokers.base import BrokerUnavailable, Published
from tornado_ws.core.protocol import Publish, SetPresence, Signal, encode_data
from tornado_ws.core.ratelimit import TokenBucket
from tornado_ws.core.registry import Membership
from tornado_ws.core.server_messages import OutFrame, ack_frame, signal_frame
from tornado_ws.errors import ErrorCode
from tornado_ws.web.state import AppState

log = logging.getLogger("tornado_ws")

#: Receives everything, may send nothing.
VIEWER_ROLE = "viewer"
NOT_DELIVERED = "internal error; the frame was not delivered"


class SessionFrames:
    """Publishing, presence state and signals of one connection (a mixin of Connection)."""

    __slots__ = ()

    state: AppState
    memberships: dict[str, Membership]
    connection_id: str
    _signal_bucket: TokenBucket | None
    _signal_refused_at: float
    _loop: asyncio.AbstractEventLoop

    # The connection's own methods, which these use:
    send: Callable[[OutFrame], None]
    _error: Callable[[str, str, str | None, str | None], None]
    _rate_limited: Callable[[str | None, str | None], None]
    _member_for: Callable[[str | None, str | None], Membership | None]

    # -- messages ---------------------------------------------------------------------

    def _publish_frame(self, member: Membership, claims: Claims, frame: Publish) -> Awaitable[None] | None:
        if VIEWER_ROLE in claims.roles:
            self._error(ErrorCode.FORBIDDEN, "viewers may not send messages", frame.id, member.key.session_id)
        elif self.state.hooks.on_message is not None:
            return self._publish_through_hook(member, claims, frame)
        elif frame.id is not None:
            return self._publish_once_fast(member, frame.data_json, frame.id)
        else:
            return self._publish_fast(member, frame.data_json)
        return None

    def _not_delivered(self, member: Membership, message_id: str | None) -> None:
        log.exception("failed to publish session=%s conn=%s", member.key.session_id, self.connection_id)
        self._error(ErrorCode.INTERNAL, NOT_DELIVERED, message_id, member.key.session_id)

    def _publish_fast(self, member: Membership, data_json: str) -> Awaitable[None] | None:
        """Publish without a coroutine when the broker can do it synchronously (memory)."""
        try:
            started = time.perf_counter()
            seq = self.state.broker.publish_now(
                member.key, user_id=member.user_id, name=member.name, data_json=data_json
            )
        except Exception:
            self._not_delivered(member, None)
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
            self._not_delivered(member, message_id)
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
            unreachable = "the message broker is unreachable; the frame was not delivered"
            self._error(ErrorCode.UNAVAILABLE, unreachable, message_id, member.key.session_id)
        except Exception:
            self._not_delivered(member, message_id)

    async def _publish_through_hook(self, member: Membership, claims: Claims, frame: Publish) -> None:
        hook = self.state.hooks.on_message
        assert hook is not None
        data_json, message_id, session_id = frame.data_json, frame.id, member.key.session_id
        data = json.loads(data_json)
        try:
            result = await hooks.call(hook, claims, session_id, data)
            if result is not None:
                data_json = encode_data(result)
        except hooks.Reject as exc:
            self._error(exc.code, exc.message, message_id, session_id)
            return
        except Exception:
            log.exception("on_message hook failed session=%s user=%s", session_id, member.user_id)
            self._error(ErrorCode.INTERNAL, NOT_DELIVERED, message_id, session_id)
            return
        if self.memberships.get(session_id) is member:  # still in the session after the hook
            await self._publish(member, data_json, message_id)

    # -- presence state and signals ------------------------------------------------------

    def _set_presence(self, member: Membership, frame: SetPresence) -> Awaitable[None] | None:
        session_id = member.key.session_id
        if len(frame.state_json.encode("utf-8")) > self.state.config.max_presence_state_size:
            limit = self.state.config.max_presence_state_size
            self._error(ErrorCode.STATE_TOO_LARGE, f"a presence state is at most {limit} bytes", None, session_id)
            return None
        if self.state.broker.set_state_now(member, frame.state, frame.state_json):
            return None
        return self._set_presence_through_broker(member, frame)

    async def _set_presence_through_broker(self, member: Membership, frame: SetPresence) -> None:
        try:
            await self.state.broker.set_state(member, frame.state, frame.state_json)
        except BrokerUnavailable as exc:
            log.warning("presence state not set session=%s: %s", member.key.session_id, exc)
            unreachable = "the message broker is unreachable; the state was not set"
            self._error(ErrorCode.UNAVAILABLE, unreachable, None, member.key.session_id)

    def _signal_frame(self, frame: Signal) -> Awaitable[None] | None:
        bucket = self._signal_bucket
        if bucket is not None and not bucket.allow():
            self.state.metrics.signals_dropped += 1
            now = self._loop.time()
            if now - self._signal_refused_at >= 1.0:  # one error a second, not one per cursor move
                # A slot of Connection's: the mixin's own __slots__ must stay empty for the layout.
                self._signal_refused_at = now  # type: ignore[misc]
                self._rate_limited(None, frame.session)
            return None
        member = self._member_for(frame.session, None)
        if member is None:
            return None
        out = signal_frame(
            session_id=member.key.session_id,
            user_id=member.user_id,
            name=member.name,
            data_json=frame.data_json,
            key=frame.key,
        )
        if self.state.broker.signal_now(member, out, frame.key):
            return None
        return self._signal_through_broker(member, out, frame.key)

    async def _signal_through_broker(self, member: Membership, out: OutFrame, key: str | None) -> None:
        try:
            await self.state.broker.signal(member, out, key)
        except BrokerUnavailable:
            self.state.metrics.signals_dropped += 1  # at most once: a signal is never retried
