"""The WebSocket endpoint ``/ws/<session_id>``: a thin adapter over the hub.

``open`` authenticates and joins, ``on_message`` parses and publishes,
``on_close`` leaves. The handler is the hub's :class:`~tornado_ws.hub.Peer`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from types import TracebackType
from typing import Any, ClassVar

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketHandler

from .auth import AuthError, TokenVerifier
from .errors import CloseCode, ErrorCode
from .hub import Hub, Member, SessionKey
from .logs import request_summary
from .messages import PONG, FrameError, OutFrame, Ping, error_frame, parse_client_frame, valid_session_id

log = logging.getLogger("tornado_ws")


class RedactedLoggingMixin(RequestHandler):
    """Tornado's request summaries and exception logs, with tokens cut out."""

    def _request_summary(self) -> str:
        return request_summary(self)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, HTTPError):
            # The access log already records the status; this adds the why, for debugging.
            log.debug("%d %s: %s", value.status_code, request_summary(self), value.log_message or "")
        else:
            # Tornado's default also prints repr(request), whose uri holds ?token=.
            log.error("uncaught exception %s", request_summary(self), exc_info=value)


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


class SessionHandler(RedactedLoggingMixin, WebSocketHandler):
    """One WebSocket connection to one session."""

    #: The registry of the most recent ``make_app()``; tests reset it between cases.
    registry: ClassVar[Hub | None] = None

    member: Member | None = None

    def initialize(self, hub: Hub, verifier: TokenVerifier) -> None:
        self.hub = hub
        self.verifier = verifier

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Tornado answers bad UTF-8 in the path with a 400 before the upgrade;
        # we want every bad session id refused the same way: close 1008.
        return value.decode("utf-8", errors="replace")

    def _token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return self.get_query_argument("token", None)

    def _refuse(self, session_id: str, reason: str) -> None:
        log.info("refused session=%r reason=%s peer=%s", session_id[:140], reason, self.request.remote_ip)
        self.close(CloseCode.POLICY_VIOLATION, reason)

    def open(self, *args: str, **kwargs: str) -> None:
        session_id = args[0] if args else ""
        if not valid_session_id(session_id):
            self._refuse(session_id, "invalid session id")
            return
        try:
            claims = self.verifier.verify(self._token())
        except AuthError as exc:
            self._refuse(session_id, exc.reason)
            return
        self.set_nodelay(True)
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
        self.hub.join(
            self.member,
            epoch=self.get_query_argument("epoch", None),
            since=_int_or_none(self.get_query_argument("since", None)),
        )

    def on_message(self, message: str | bytes) -> None:
        member = self.member
        if member is None:
            return
        try:
            frame = parse_client_frame(message)
        except FrameError as exc:
            self.send(error_frame(exc.code, exc.message))
            return
        try:
            if isinstance(frame, Ping):
                self.send(PONG)
            else:
                self.hub.publish(member.key, user_id=member.user_id, name=member.name, data_json=frame.data_json)
        except Exception:
            log.exception("failed to handle a frame session=%s conn=%s", member.key.session_id, member.connection_id)
            self.send(error_frame(ErrorCode.INTERNAL, "internal error; the frame was not delivered"))

    def on_close(self) -> None:
        member = self.member
        if member is None:
            return
        self.hub.leave(member)
        log.info(
            "disconnect session=%s org=%s user=%s conn=%s code=%s",
            member.key.session_id,
            member.key.org_id,
            member.user_id,
            member.connection_id,
            self.close_code,
        )

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (as a dead network would)."""
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        if stream is not None:
            stream.close()

    # -- Peer --------------------------------------------------------------

    def send(self, frame: OutFrame) -> None:
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        stream: Any = getattr(conn, "stream", None)
        # Server frames are unmasked, so the bytes framed once serve every member.
        with contextlib.suppress(StreamClosedError):
            stream.write(frame.wire)
