"""What every tornado-ws request handler shares: JSON errors and logs without tokens."""

from __future__ import annotations

import http
import logging
from types import TracebackType
from typing import Any

from tornado.web import HTTPError, RequestHandler

from tornado_ws.logs import request_summary

log = logging.getLogger("tornado_ws")


class ApiError(HTTPError):
    """An HTTP error with a stable machine-readable ``code`` for the JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


class RedactedLoggingMixin(RequestHandler):
    """Exception logs minus tokens; errors as JSON.

    Access lines are redacted by the filter every Hub installs on Tornado's loggers
    (:func:`~tornado_ws.logs.install_redaction`), which also covers applications that
    keep Tornado's default ``log_function``; no override of Tornado's private
    ``_request_summary`` is needed.
    """

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

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        try:
            phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "Error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        message = phrase
        if isinstance(exc, HTTPError) and exc.log_message:
            message = exc.log_message
            code = getattr(exc, "code", code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish({"error": {"code": code, "message": message}})
