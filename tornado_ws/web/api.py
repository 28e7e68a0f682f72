"""HTTP routes: the backend API, health, metrics, demo tokens, the page. JSON errors only.

The API authenticates exactly like the WebSocket (same verifier); the caller's
``org`` claim scopes every session id it names, so no request can reach
another organization's sessions.
"""

from __future__ import annotations

import base64
import bisect
import hmac
import logging
import re
from typing import Any

from tornado.web import StaticFileHandler

from tornado_ws import hooks
from tornado_ws.auth import AuthError, Claims, issue_token, safe_claim_text
from tornado_ws.brokers.base import MAX_BAN_SECONDS, BrokerUnavailable, SessionLimit
from tornado_ws.core.protocol import MessageError, encode_data, parse_json, valid_message_id, valid_session_id
from tornado_ws.core.registry import SessionKey
from tornado_ws.errors import CloseCode
from tornado_ws.metrics import CONTENT_TYPE
from tornado_ws.web.base import ApiError, RedactedLoggingMixin
from tornado_ws.web.state import AppState

#: The demo page may only run its own script and talk to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
DEMO_TOKEN_TTL = 3600.0
_MAX_DEMO_FIELD = 128
PUBLISH_ROLES = frozenset({"service", "admin"})
#: ASCII digits only: str.isdigit() would let "²" or "٣" through.
_BAN_SECONDS = re.compile(r"[0-9]{1,8}")

log = logging.getLogger("tornado_ws")


class JsonHandler(RedactedLoggingMixin):
    """Base for JSON routes."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")


class NotFoundHandler(JsonHandler):
    """Default route: a JSON 404 instead of Tornado's HTML page."""

    def prepare(self) -> None:
        raise ApiError(404, "not_found", "no such route")


class HealthHandler(JsonHandler):
    """``/healthz``: the process is up and serving HTTP."""

    def get(self) -> None:
        self.finish({"status": "ok"})


class ReadyHandler(JsonHandler):
    """``/readyz``: ready for traffic (not draining; the broker answers)."""

    def initialize(self, state: AppState) -> None:
        self.state = state

    async def get(self) -> None:
        if self.state.draining:
            self.set_status(503)
            self.finish({"status": "draining"})
            return
        # Not awaited: a broker still connecting (Redis down at start) is "not ready" now, not
        # in SUBSCRIBE_TIMEOUT seconds.
        self.state.start_broker()
        if not await self.state.broker.healthy():
            self.set_status(503)
            self.finish({"status": "broker_unavailable"})
            return
        self.finish({"status": "ready"})


class MetricsHandler(RedactedLoggingMixin):
    """``/metrics`` (Prometheus text); with ``--metrics-token``, only for that bearer token."""

    def initialize(self, state: AppState) -> None:
        self.state = state

    def prepare(self) -> None:
        expected = self.state.config.metrics_token
        if expected is None:
            return
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            self.set_header("WWW-Authenticate", 'Bearer realm="tornado-ws metrics"')
            raise ApiError(401, "unauthorized", "/metrics needs Authorization: Bearer <--metrics-token>")

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.state.metrics.render())


class ApiHandler(JsonHandler):
    """Base of ``/api/...``: a Bearer token is required and verified like a WebSocket token."""

    claims: Claims

    def initialize(self, state: AppState) -> None:
        self.state = state

    def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.set_header("WWW-Authenticate", 'Bearer realm="tornado-ws"')
            raise ApiError(401, "unauthorized", "missing Authorization: Bearer <jwt>")
        try:
            self.claims = self.state.verifier.verify(token.strip())
        except AuthError as exc:
            self.set_header("WWW-Authenticate", 'Bearer realm="tornado-ws", error="invalid_token"')
            raise ApiError(401, "unauthorized", exc.reason) from None

    async def session_key(self, session_id: str) -> SessionKey:
        """The caller's own org's session ``session_id``, if the caller may use it: the same
        rule as a WebSocket join (the ``sessions`` claim, then the ``authorize`` hook)."""
        if not valid_session_id(session_id, self.state.config.max_session_id_length):
            raise ApiError(400, "invalid_session_id", "session ids are 1-128 characters of [A-Za-z0-9._~:-]")
        try:
            refused = await hooks.refusal(self.state.hooks, self.claims, session_id)
        except Exception:
            log.exception("authorize hook failed session=%s user=%s", session_id, self.claims.user_id)
            raise ApiError(500, "internal", "authorization failed") from None
        if refused is not None:
            raise ApiError(403, "forbidden", f"not allowed in this session: {refused}")
        return SessionKey(self.claims.org_id, session_id)

    def require_role(self, roles: frozenset[str]) -> None:
        if not roles.intersection(self.claims.roles):
            raise ApiError(403, "forbidden", f"requires role {' or '.join(sorted(roles))}")


class PublishHandler(ApiHandler):
    """``POST /api/sessions/<id>/messages`` with ``{"data": ..., "idempotency_key"?: ...}`` →
    ``{"seq": N}``, or ``{"seq": N, "duplicate": true}`` for a key already published."""

    async def post(self, session_id: str) -> None:
        self.require_role(PUBLISH_ROLES)
        key = await self.session_key(session_id)
        if len(self.request.body) > self.state.config.max_message_size:
            raise ApiError(413, "payload_too_large", f"body over {self.state.config.max_message_size} bytes")
        try:
            body = parse_json(self.request.body.decode("utf-8", errors="strict"))
            if not isinstance(body, dict) or "data" not in body:
                raise ApiError(400, "bad_request", 'the body must be a JSON object with "data"')
            idempotency_key = body.get("idempotency_key")
            if "idempotency_key" in body and not valid_message_id(idempotency_key):
                raise ApiError(400, "bad_request", "idempotency_key must be 1-64 characters of [A-Za-z0-9._:-]")
            data_json = encode_data(body["data"])
        except UnicodeDecodeError:
            raise ApiError(400, "bad_json", "the body is not UTF-8") from None
        except MessageError as exc:
            raise ApiError(400, str(exc.code), exc.message) from None
        await self.state.ensure_started()
        claims, broker = self.claims, self.state.broker
        try:
            if idempotency_key is None:
                seq = await broker.publish(key, user_id=claims.user_id, name=claims.name, data_json=data_json)
            else:
                seq, duplicate = await broker.publish_once(
                    key, user_id=claims.user_id, name=claims.name, data_json=data_json, message_id=idempotency_key
                )
                if duplicate:
                    self.finish({"seq": seq, "duplicate": True})
                    return
        except SessionLimit:
            raise ApiError(429, "too_many_sessions", "this organization is at its session limit") from None
        except BrokerUnavailable:
            raise ApiError(503, "unavailable", "the message broker is unreachable; nothing was published") from None
        self.state.metrics.api_messages_in += 1
        self.finish({"seq": seq})


class PresenceHandler(ApiHandler):
    """``GET /api/sessions/<id>/presence[?limit=N&cursor=C]``: the roster, whole or one page."""

    async def get(self, session_id: str) -> None:
        key = await self.session_key(session_id)
        limit_arg, cursor_arg = self.get_query_argument("limit", None), self.get_query_argument("cursor", None)
        limit = _page_limit(limit_arg) if limit_arg is not None or cursor_arg is not None else None
        after = _decode_cursor(cursor_arg) if cursor_arg is not None else None
        await self.state.ensure_started()
        try:
            presence = await self.state.broker.presence(key)
        except BrokerUnavailable:
            raise ApiError(503, "unavailable", "the message broker is unreachable") from None
        if limit is None:
            self.finish(presence)
            return
        # Pages in user-id order: a cursor stays valid whoever joins or leaves between two pages.
        ordered = sorted(presence["participants"], key=lambda p: str(p["user_id"]))
        start = 0 if after is None else bisect.bisect_right([str(p["user_id"]) for p in ordered], after)
        page = ordered[start : start + limit]
        more = start + limit < len(ordered)
        next_cursor = _encode_cursor(str(page[-1]["user_id"])) if more and page else None
        self.finish(
            {"participants": page, "participant_count": presence["participant_count"], "next_cursor": next_cursor}
        )


#: The largest page of the presence route.
MAX_PAGE = 1000
_PAGE_LIMIT = re.compile(r"[0-9]{1,4}")


def _page_limit(raw: str | None) -> int:
    if raw is None:
        return MAX_PAGE
    if _PAGE_LIMIT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "bad_request", f"limit is an integer from 1 to {MAX_PAGE}")
    return int(raw)


def _encode_cursor(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode()).rstrip(b"=").decode()


def _decode_cursor(raw: str) -> str:
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "cursor is not one this route returned") from None


class KickHandler(ApiHandler):
    """``DELETE /api/sessions/<id>/users/<user_id>[?ban_seconds=N]`` (admin): close that user's
    sockets with 4003; with ``ban_seconds`` its joins of the session are refused (4003) that long."""

    async def delete(self, session_id: str, user_id: str) -> None:
        self.require_role(frozenset({"admin"}))
        key = await self.session_key(session_id)
        ban_seconds = self._ban_seconds()
        await self.state.ensure_started()
        try:
            closed = await self.state.broker.kick(key, user_id, CloseCode.KICKED, "kicked", ban_seconds=ban_seconds)
        except BrokerUnavailable:
            raise ApiError(503, "unavailable", "the message broker is unreachable") from None
        self.finish({"session_id": session_id, "user_id": user_id, "connections_closed": closed})

    def _ban_seconds(self) -> int:
        values = self.request.query_arguments.get("ban_seconds")
        if not values:
            return 0
        raw = values[-1].decode("ascii", "replace")
        if _BAN_SECONDS.fullmatch(raw) is None or int(raw) > MAX_BAN_SECONDS:
            raise ApiError(400, "bad_request", f"ban_seconds must be an integer from 0 to {MAX_BAN_SECONDS}")
        return int(raw)


class DemoTokenHandler(JsonHandler):
    """``GET /demo/token?user=U&org=O&name=N`` (only with ``--demo``)."""

    def initialize(self, secret: str) -> None:
        self.secret = secret

    def _field(self, name: str, default: str | None) -> str | None:
        value = self.get_query_argument(name, default)
        # Tornado's argument scrub keeps TAB, CR and LF; the verifier would refuse such a token anyway.
        if value is not None and (not value.strip() or len(value) > _MAX_DEMO_FIELD or not safe_claim_text(value)):
            raise ApiError(400, "bad_request", f"{name} must be 1-{_MAX_DEMO_FIELD} characters, no control characters")
        return value.strip() if value is not None else None

    def get(self) -> None:
        user = self._field("user", None)
        if user is None:
            raise ApiError(400, "bad_request", "user is required, e.g. /demo/token?user=alice&org=acme")
        org = self._field("org", "demo") or "demo"
        name = self._field("name", None)
        token = issue_token(self.secret, user_id=user, org_id=org, name=name, ttl=DEMO_TOKEN_TTL)
        self.finish({"token": token, "expires_in": int(DEMO_TOKEN_TTL)})


class PageHandler(RedactedLoggingMixin, StaticFileHandler):
    """The demo page and its assets, with a CSP that forbids inline script."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")


def api_routes(state: AppState) -> list[Any]:
    kwargs = {"state": state}
    return [
        (r"/api/sessions/([^/]*)/messages", PublishHandler, kwargs),
        (r"/api/sessions/([^/]*)/presence", PresenceHandler, kwargs),
        (r"/api/sessions/([^/]*)/users/([^/]+)", KickHandler, kwargs),
        (r"/readyz", ReadyHandler, kwargs),
        (r"/metrics", MetricsHandler, kwargs),
    ]
