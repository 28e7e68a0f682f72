"""Logging that never prints a token.

Tornado's access log and its uncaught-exception log print the request URI,
``?token=`` included. We redact at the source (:func:`log_request`,
:func:`request_summary`) and again in a handler filter on every record, so a
token that slips into some other message is still cut.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tornado.web import RequestHandler

log = logging.getLogger("tornado_ws")
access_log = logging.getLogger("tornado.access")

REDACTED = "[redacted]"
_QUERY_SECRET = re.compile(r"((?:^|[?&;])(?:token|access_token|jwt)=)[^&;#\s]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
# A JWT anywhere else in a message: three base64url parts, the first a JSON header.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """``text`` with every token-bearing part replaced by ``[redacted]``."""
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _JWT.sub(REDACTED, text)


def request_summary(handler: RequestHandler) -> str:
    request = handler.request
    return f"{request.method} {redact(request.uri or '')} ({request.remote_ip})"


def log_request(handler: RequestHandler) -> None:
    """Application ``log_function``: Tornado's access line, minus the token."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):  # redacting the URI costs more than the rest of a 101
        summary = request_summary(handler)
        access_log.log(level, "%d %s %.2fms", status, summary, 1000.0 * handler.request.request_time())


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr through the redacting filter (idempotent)."""
    root = logging.getLogger()
    for existing in root.handlers:
        if any(isinstance(f, RedactingFilter) for f in existing.filters):
            return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
