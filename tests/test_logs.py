"""Redaction: no token survives into a log line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.web
import websockets
from tornado.httpclient import AsyncHTTPClient

from tests.conftest import make_token
from tornado_ws.logs import JsonFormatter, RedactingFilter, TextFormatter, configure_logging, redact, redact_query
from tornado_ws.testing import DEFAULT_SECRET, HubServer, test_hub

TOKEN = make_token()


def spaced_token(secret: str = DEFAULT_SECRET, sub: str = "alice") -> str:
    """A valid HS256 JWT whose header JSON starts "{ ": it encodes as "eyAi...", not the "eyJ" of
    the JWT regex, so only reading the parameter name can redact it."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": sub, "org": "acme", "exp": int(time.time()) + 600}
    signing_input = b64(b'{ "alg": "HS256", "typ": "JWT" }') + "." + b64(json.dumps(claims).encode())
    return f"{signing_input}.{b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())}"


SPACED = spaced_token()


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


# -- query parameter names are read as Tornado reads them -------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "t%6Fken={}",
        "TOKEN={}",
        "since=3&T%4F%4bEN={}&epoch=x",
        "access%5Ftoken={}",
        "%6A%77%74={}",
        "Access_Token={}",
        "to+ken=x&tok%65n={}",
    ],
)
def test_redact_reads_encoded_and_any_case_parameter_names(query: str) -> None:
    assert SPACED.startswith("eyAi")  # so the JWT-shape regex cannot be what redacts it
    query = query.format(SPACED)
    for text in (f"GET /ws/room?{query} (127.0.0.1)", f"uri='/boom?{query}', version='HTTP/1.1'"):
        cleaned = redact(text)
        for part in SPACED.split("."):
            assert part not in cleaned
        assert "=[redacted]" in cleaned


def test_redact_query_keeps_other_parameters_and_the_names_as_sent() -> None:
    assert redact_query(f"since=3&t%6Fken={SPACED}&epoch=e1") == "since=3&t%6Fken=[redacted]&epoch=e1"
    assert redact_query("since=3&tokens=x&my_token=y&token=") == "since=3&tokens=x&my_token=y&token="


# -- text lines cannot be forged --------------------------------------------------------------------

FORGED = "2030-01-01 00:00:00,000 INFO tornado_ws connect session=board org=acme user=ceo conn=1"


def text_line(message: str, *args: object) -> str:
    formatter = TextFormatter("%(levelname)s %(name)s %(message)s")
    return formatter.format(logging.LogRecord("tornado_ws", logging.INFO, __file__, 1, message, args or None, None))


@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_text_formatter_keeps_any_message_on_one_line(breaker: str) -> None:
    line = text_line("connect session=%s org=%s user=%s", "room", "acme", f"mallory{breaker}{FORGED}")
    assert line.splitlines() == [line]  # str.splitlines knows every line break of Unicode
    assert line.startswith("INFO tornado_ws connect session=room org=acme user=mallory\\")
    assert FORGED in line  # kept, readable, but inside mallory's line


def test_text_formatter_escapes_every_control_character_and_keeps_the_rest() -> None:
    line = text_line("v=%s", "a\tb\x00c\x1b[31md\x7fe\x9ff\ud83dg Zoë 👩‍💻 \\n")
    assert line == "INFO tornado_ws v=a\\tb\\x00c\\x1b[31md\\x7fe\\x9ff\\ud83dg Zoë 👩‍💻 \\n"
    line.encode("utf-8")  # a lone surrogate would make a UTF-8 log file's encoder fail


def test_text_formatter_leaves_tracebacks_multiline_and_the_record_untouched() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("a\nb",), (type(exc), exc, exc.__traceback__)
        )
    text = TextFormatter("%(message)s").format(record)
    assert text.startswith("failed a\\nb\nTraceback (most recent call last):")
    assert record.message == "failed a\nb"  # other handlers (JSON) format the record as it was


def test_json_lines_are_unchanged_by_the_escaping() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "user=%s", (f"m\r\n{FORGED}",), None)
    line = JsonFormatter().format(record)
    assert line.splitlines() == [line]
    assert json.loads(line)["message"] == f"user=m\r\n{FORGED}"


def test_configure_logging_text_uses_the_escaping_formatter() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("WARNING", "text")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0].formatter, TextFormatter)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


# -- an application that embeds the hub with Tornado's default log_function --------------------------


class Boom(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("bug in the embedding app")


class Page(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish("ok")


@pytest.fixture
def embedded(io_loop: Any) -> Iterator[HubServer]:
    # HubServer is what an embedder writes: tornado.web.Application([*hub.routes(), ...]), no log_function.
    server = HubServer(test_hub(), extra_routes=[(r"/page", Page), (r"/boom", Boom)]).start()
    yield server
    io_loop.run_sync(server.stop)


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.mark.parametrize(
    "param", ["token", "t%6Fken", "TOKEN", "access_token", "%61ccess_token", "jwt", "bearer-header"]
)
async def test_an_embedding_app_logs_no_token(
    embedded: HubServer, caplog: pytest.LogCaptureFixture, param: str
) -> None:
    caplog.set_level(logging.INFO)
    token = SPACED  # valid for the hub, and invisible to the JWT-shape regex
    base = f"127.0.0.1:{embedded.port}"
    if param == "bearer-header":
        headers, query = {"Authorization": f"Bearer {token}"}, ""
    else:
        headers, query = {}, f"?since=0&{param}={token}"
    async with websockets.connect(f"ws://{base}/ws/room{query}", additional_headers=headers) as ws:
        try:
            first = json.loads(await ws.recv())["type"]
        except websockets.ConnectionClosed as exc:
            first = f"closed {exc.rcvd.reason if exc.rcvd else ''}"
    # Tornado decodes names: ?t%6Fken= *is* the token parameter, and it authenticates.
    assert first == ("welcome" if param in ("token", "t%6Fken", "bearer-header") else "closed missing token")
    http = AsyncHTTPClient()
    for path in ("/page", "/api/sessions/room/presence", "/nope", "/boom"):
        await http.fetch(f"http://{base}{path}{query}", headers=headers, raise_error=False)
    text = logged_text(caplog)
    assert "tornado.access 101 GET /ws/room" in text
    assert "tornado.application Uncaught exception GET /boom" in text  # the app's own handler
    for part in token.split("."):
        assert part not in text
    if query:
        assert f"{param}=[redacted]" in text


def test_every_hub_installs_the_logger_filter_once() -> None:
    test_hub()
    test_hub()
    for name in ("tornado.access", "tornado.application", "tornado.general"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, RedactingFilter) for f in filters) == 1
