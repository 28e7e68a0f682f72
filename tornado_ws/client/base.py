"""What both clients share: errors, the backoff, frame parsing, and the dialer that counts failures."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tornado_ws.errors import should_reconnect

log = logging.getLogger("tornado_ws.client")

TokenSource = str | Callable[[], str | Awaitable[str]]
FrameParser = Callable[[str | bytes], dict[str, Any]]


class SessionClosed(Exception):
    """A stream stopped for good.

    ``code`` is the server's close code (or the code of the ``left`` frame that ended one
    session of a :class:`~tornado_ws.client.Client`), or ``None`` when there was none: retries
    exhausted, the handshake refused over HTTP (then ``status`` holds the HTTP status), a frame
    that broke the protocol (``reason`` starts with ``"protocol error"``), or the client closed.
    ``session`` names the session when one session ended and the connection did not.
    """

    def __init__(self, code: int | None, reason: str, *, status: int | None = None, session: str | None = None) -> None:
        where = f"session {session!r}" if session is not None else "session"
        super().__init__(f"{where} closed ({code}): {reason}")
        self.code = code
        self.reason = reason
        self.status = status
        self.session = session


class PublishError(Exception):
    """The server refused one published message: the ``error`` frame that carried its ``id``.

    ``code`` is the error code (``rate_limited``, ``forbidden``, ``unavailable``, ``bad_frame``,
    an ``on_message`` hook's own code...). The message was not published.
    """

    def __init__(self, code: str, message: str, *, message_id: str, session: str) -> None:
        super().__init__(f"message {message_id!r} to {session!r} refused ({code}): {message}")
        self.code = code
        self.message = message
        self.message_id = message_id
        self.session = session


class PresenceError(Exception):
    """The server refused a presence state: ``code`` is ``state_too_large`` (over its
    ``--max-presence-state-size``) or ``unavailable`` (Redis unreachable). Nothing changed: the
    session still shows the state set before."""

    def __init__(self, code: str, message: str, *, session: str) -> None:
        super().__init__(f"presence state in {session!r} refused ({code}): {message}")
        self.code = code
        self.message = message
        self.session = session


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: retry n waits U(c/2, c), c = min(cap, base * 2**n).

    The floor of ``c/2`` is what bounds a broken server's load: each wait is at least as long
    as the one before until ``cap``, while the random half still spreads a crowd of clients.
    """

    base: float = 0.1
    cap: float = 10.0
    #: Consecutive failed attempts before giving up; ``None`` retries forever.
    max_attempts: int | None = None
    #: A connection that dies sooner than this after its welcome counts as a failed attempt;
    #: only one that stayed up this long resets the count (and reconnects without waiting).
    stable_after: float = 5.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 62)))
        return (rng or random).uniform(ceiling / 2, ceiling)


#: ``Backoff()``: 0.1 s doubling to 10 s, forever, stable after 5 s.
DEFAULT_BACKOFF = Backoff()


def retryable_status(status: int) -> bool:
    """Whether an HTTP refusal of the handshake may go away by itself (overload, rate limit)."""
    return status >= 500 or status == 429


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """A server frame as a dict; ``ValueError`` for anything our server never sends."""
    try:
        frame = json.loads(raw)
    except RecursionError:
        raise ValueError("a frame is nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError, and integers over 4,300 digits
        raise ValueError(f"a frame is not JSON ({type(exc).__name__})") from None
    if not isinstance(frame, dict):
        raise ValueError(f"a frame is a JSON {type(frame).__name__}, not an object")
    return frame


def check_welcome(frame: dict[str, Any]) -> dict[str, Any]:
    """A welcome whose ``seq`` and ``epoch`` can drive a resume; ``ValueError`` otherwise."""
    seq, epoch = frame.get("seq"), frame.get("epoch")
    if frame.get("type") != "welcome":
        raise ValueError("the server did not start with a welcome")
    if not is_seq(seq) or not isinstance(epoch, str):
        raise ValueError("the welcome has no valid seq and epoch")
    return frame


def parse_welcome(raw: str | bytes) -> dict[str, Any]:
    """The first frame of a ``/ws/<session>`` connection, checked."""
    return check_welcome(parse_frame(raw))


def is_seq(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def base_url(url: str, session: str | None = None) -> str:
    """The server's base URL from what a caller may pass: ``ws://host:port``, ``http://host:port``,
    ``.../ws`` or (with ``session``) the full ``.../ws/<session>``."""
    url = url.rstrip("/")
    for scheme, ws_scheme in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(scheme):
            url = ws_scheme + url[len(scheme) :]
    suffixes = [f"/ws/{urllib.parse.quote(session, safe='')}", f"/ws/{session}"] if session else []
    for suffix in (*suffixes, "/ws"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def protocol_error(conn: WebSocketClientConnection, exc: ValueError) -> SessionClosed:
    """Retrying would meet the same broken server, and skipping would hide a gap: stop loudly."""
    conn.close(1002, "protocol error")
    log.warning("closing: the server broke the protocol: %s", exc)
    return SessionClosed(None, f"protocol error: {exc}")


class Dialer:
    """Opens sockets for one client: the token, the socket options, and the count of
    consecutive failed attempts that drives the backoff (refused or failed connects, and
    connections that died within ``Backoff.stable_after`` of their first frame)."""

    def __init__(
        self,
        token: TokenSource,
        backoff: Backoff,
        *,
        connect_timeout: float,
        ping_interval: float,
        ping_timeout: float,
        max_message_size: int,
    ) -> None:
        self.backoff = backoff
        self._token = token
        self._connect_timeout = connect_timeout
        self._ping = (ping_interval, ping_timeout)
        self._max_message_size = max_message_size
        self._failures = 0
        self._opened_at = 0.0

    async def token(self) -> str:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        return token

    async def open(self, url: str, first: FrameParser) -> tuple[WebSocketClientConnection, dict[str, Any]]:
        """Connect, after the backoff delay if the last attempts failed; returns the socket and its
        first frame (checked by ``first``). Raises SessionClosed if refused for good."""
        while True:
            if self._failures:
                delay = self.backoff.delay(self._failures - 1)
                log.debug("reconnecting in %.2fs (%d failed attempts)", delay, self._failures)
                await asyncio.sleep(delay)
            try:
                conn, frame = await self._open_once(url, first)
            except SessionClosed:
                raise
            except HTTPClientError as exc:
                if not retryable_status(exc.code):
                    raise SessionClosed(None, f"handshake refused: {exc}", status=exc.code) from None
                self.failed(f"handshake refused: {exc}")
            except (OSError, TimeoutError) as exc:  # ConnectionError, StreamClosedError included
                self.failed(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a broken handshake or token provider: retried, but visibly
                log.warning("connect attempt failed on %s", type(exc).__name__)
                self.failed(f"{type(exc).__name__}: {exc}")
            else:
                self._opened_at = time.monotonic()
                return conn, frame

    async def _open_once(self, url: str, first: FrameParser) -> tuple[WebSocketClientConnection, dict[str, Any]]:
        request = HTTPRequest(
            url,
            headers={"Authorization": f"Bearer {await self.token()}"},
            connect_timeout=self._connect_timeout,
            request_timeout=self._connect_timeout,
        )
        conn = await websocket_connect(
            request,
            ping_interval=self._ping[0],
            ping_timeout=self._ping[1],
            max_message_size=self._max_message_size,
        )
        try:
            raw = await asyncio.wait_for(conn.read_message(), self._connect_timeout)
        except TimeoutError:
            conn.close()
            raise
        if raw is None:
            code, reason = conn.close_code, conn.close_reason or ""
            conn.close()  # releases Tornado's protocol object
            if not should_reconnect(code):
                raise SessionClosed(code, reason)
            raise ConnectionError(f"closed before its first frame ({code}): {reason}")
        try:
            return conn, first(raw)
        except ValueError as exc:
            raise protocol_error(conn, exc) from None

    def failed(self, why: str) -> None:
        """Count one failed attempt; raises SessionClosed once ``max_attempts`` is reached."""
        self._failures += 1
        limit = self.backoff.max_attempts
        if limit is not None and self._failures >= limit:
            raise SessionClosed(None, f"gave up after {self._failures} attempts: {why}")
        log.debug("attempt %d failed: %s", self._failures, why)

    def dropped(self, code: int | None) -> None:
        """A connection ended and may be retried: only one that stayed up resets the count."""
        lived = time.monotonic() - self._opened_at
        if lived >= self.backoff.stable_after:
            self._failures = 0
        else:
            self.failed(f"closed {lived:.2f}s after its welcome ({code})")


def encode_frame(frame: dict[str, Any]) -> bytes:
    """A client frame as the server will read it; ``ValueError`` (``TypeError``) for what cannot be
    sent: NaN or infinity, a lone surrogate, nesting too deep, a value that is not JSON."""
    try:
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise ValueError("a frame is nested too deeply to send") from None


def discard_result(future: asyncio.Future[Any]) -> None:
    """A done callback: a write that failed on a dropped socket is not an unhandled error."""
    if not future.cancelled():
        future.exception()
