"""Plain HTTP routes: health, the demo token mint, the demo page. JSON errors only."""

from __future__ import annotations

import http
from typing import Any

from tornado.web import HTTPError, StaticFileHandler

from .auth import issue_token
from .handlers import RedactedLoggingMixin

#: The demo page may only run its own script and talk to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
DEMO_TOKEN_TTL = 3600.0
_MAX_DEMO_FIELD = 128


class JsonHandler(RedactedLoggingMixin):
    """Base for API routes: every error is ``{"error": {"code", "message"}}``."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, HTTPError) and exc.log_message else None
        try:
            phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "Error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        self.finish({"error": {"code": code, "message": message or phrase}})


class NotFoundHandler(JsonHandler):
    """Default route: a JSON 404 instead of Tornado's HTML page."""

    def prepare(self) -> None:
        raise HTTPError(404, "no such route")


class HealthHandler(JsonHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


class DemoTokenHandler(JsonHandler):
    """``GET /demo/token?user=U&org=O&name=N`` (only with ``--demo``)."""

    def initialize(self, secret: str) -> None:
        self.secret = secret

    def _field(self, name: str, default: str | None) -> str | None:
        value = self.get_query_argument(name, default)
        if value is not None and (not value.strip() or len(value) > _MAX_DEMO_FIELD):
            raise HTTPError(400, f"{name} must be 1-{_MAX_DEMO_FIELD} characters")
        return value.strip() if value is not None else None

    def get(self) -> None:
        user = self._field("user", None)
        if user is None:
            raise HTTPError(400, "user is required, e.g. /demo/token?user=alice&org=acme")
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
