"""Redaction: no token survives into a log line."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import make_token
from tornado_ws.logs import RedactingFilter, configure_logging, redact

TOKEN = make_token()


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws/room?token={TOKEN} (127.0.0.1)",
        f"GET /ws/room?since=3&token={TOKEN}&epoch=x",
        f"Authorization: Bearer {TOKEN}",
        f"something else mentioning {TOKEN} in passing",
        f"/ws/r?access_token={TOKEN}",
    ],
)
def test_redact_removes_tokens(text: str) -> None:
    cleaned = redact(text)
    assert TOKEN not in cleaned
    assert TOKEN.split(".")[1] not in cleaned
    assert "[redacted]" in cleaned


def test_redact_keeps_other_text() -> None:
    assert redact("GET /ws/room?since=3&epoch=abc") == "GET /ws/room?since=3&epoch=abc"


def test_filter_redacts_message_args_and_tracebacks() -> None:
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "uri=%s", (f"/ws/a?token={TOKEN}",), (type(exc), exc, exc.__traceback__)
        )
    assert RedactingFilter().filter(record)
    assert TOKEN not in record.getMessage()
    assert record.exc_text is not None and TOKEN not in record.exc_text
    assert "boom" in record.exc_text


def test_configure_logging_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("WARNING")
        configure_logging("WARNING")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        assert any(isinstance(f, RedactingFilter) for f in added[0].filters)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
