"""Logging that never prints a token, and text lines no client value can forge.

Tornado's access log and its uncaught-exception log print the request URI,
``?token=`` included. We redact at the source (:func:`log_request`,
:func:`request_summary`), in a filter on Tornado's own loggers (installed by
every :class:`~tornado_ws.Hub`, so embedding applications with Tornado's
default ``log_function`` are covered), and again in a handler filter on every
record, so a token that slips into some other message is still cut.

Query parameter names are read as Tornado reads them (split on ``&``,
percent-decoded), so ``?t%6Fken=`` is a token parameter like ``?token=``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from tornado.web import RequestHandler

log = logging.getLogger("tornado_ws")
access_log = logging.getLogger("tornado.access")

REDACTED = "[redacted]"
#: Query parameters whose value is a credential, compared after decoding and lower-casing.
_SECRET_PARAMS = frozenset(("token", "access_token", "jwt"))
#: A query string inside a log message: from a "?" to the next whitespace.
_QUERY = re.compile(r"\?(\S+)")
#: A regex on the raw text still catches "token=" after ";" or at the start of a line.
_QUERY_SECRET = re.compile(r"((?:^|[?&;])(?:token|access_token|jwt)=)[^&;#\s]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
# A JWT anywhere else in a message: three base64url parts, the first a JSON header.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


#: Characters that would let a logged value end the line or fake another: C0, DEL, C1, U+2028/9,
#: and lone surrogates (which also break a UTF-8 log file's encoder).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact_query(query: str) -> str:
    """``query`` with the value of every credential parameter replaced by ``[redacted]``.

    Names are decoded the way Tornado decodes them (``parse_qs`` on ``&``, latin-1,
    ``+`` as space) before comparing, so an encoded name cannot hide a token.
    """
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, _, value = part.partition("=")
        if "%" in name or "+" in name:  # unquote_plus is the slow part; most names need none
            name = unquote_plus(name, encoding="latin-1")
        if value and name.lower() in _SECRET_PARAMS:
            parts[i] = part[: len(part) - len(value)] + REDACTED  # the name as it was sent
            changed = True
    return "&".join(parts) if changed else query


def redact(text: str) -> str:
    """``text`` with every token-bearing part replaced by ``[redacted]``."""
    if "?" in text:
        text = _QUERY.sub(lambda m: "?" + redact_query(m.group(1)), text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _JWT.sub(REDACTED, text)


def escape_control(text: str) -> str:
    """``text`` with control characters as ``\\n``, ``\\x1b``, ``\\u2028``: one line, whatever it holds."""
    return _CONTROL.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def request_summary(handler: RequestHandler) -> str:
    """Tornado's ``METHOD URI (ip)`` with the URI's credentials redacted."""
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


#: Tornado's loggers that print request URIs or headers: access lines, uncaught exceptions, warnings.
_TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")
_LOGGER_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Redact every record of Tornado's loggers, whatever handlers the application installs (idempotent).

    A filter on the logger runs before any handler, so an application that mounts the
    hub's routes with Tornado's default ``log_function`` (``handler._request_summary()``
    into ``tornado.access``) logs no token either, with no override of Tornado internals.
    """
    for name in _TORNADO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(_LOGGER_FILTER)


class TextFormatter(logging.Formatter):
    """The text log line, its message with control characters escaped (see :func:`escape_control`).

    Claims, session ids, URIs: any value a client controls may reach a message through
    ``%s``; escaped, a CR/LF in it cannot start a forged line. Tracebacks stay multi-line.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_control(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


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
        # JSON lines need none of this: json.dumps writes CR, LF and the rest of C0 as \uXXXX escapes.
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
