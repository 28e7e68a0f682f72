"""An asyncio client that hides reconnects: one gapless, duplicate-free stream.

    client = await connect("ws://127.0.0.1:8888", token, "standup")
    await client.send({"text": "hi"})
    async for frame in client:          # message / user_joined / user_left / error / welcome
        ...
    await client.close()

On any drop it reconnects with exponential backoff and jitter, resuming
with ``since``/``epoch``. A connection that dies within ``Backoff.stable_after``
seconds of its welcome counts as a failed attempt, so a server that welcomes
and closes at once sees a slowing trickle of attempts, not a storm. Messages
already seen (``seq <= last_seq``) are dropped, so replays never duplicate.
Each reconnect yields the server's new ``welcome`` frame: ``recovered: true``
means nothing was lost; ``recovered: false`` means history did not reach back
far enough and the caller should reload its state (live messages continue
after the welcome's ``seq``).

The stream never ends silently: iteration raises :class:`SessionClosed` on
close codes that mean "do not come back" (1008, 1009, 4003, 4004), on an HTTP
refusal of the handshake that retrying cannot fix (4xx but 429), on a frame
that breaks the protocol (not JSON, not an object, nested too deeply, a bad
welcome) and when ``max_attempts`` runs out. Only :meth:`Client.close` ends
it with ``StopAsyncIteration``. Built on Tornado's own ``websocket_connect``;
no other dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tornado_ws.errors import should_reconnect

log = logging.getLogger("tornado_ws.client")

TokenSource = str | Callable[[], str | Awaitable[str]]


class SessionClosed(Exception):
    """The client stopped for good.

    ``code`` is the server's close code, or ``None`` when there was none: retries exhausted,
    the handshake refused over HTTP (then ``status`` holds the HTTP status), or a frame that
    broke the protocol (``reason`` starts with ``"protocol error"``).
    """

    def __init__(self, code: int | None, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"session closed ({code}): {reason}")
        self.code = code
        self.reason = reason
        self.status = status


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


_CLOSED = object()


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


def parse_welcome(raw: str | bytes) -> dict[str, Any]:
    """The first frame of a connection, checked: ``seq`` and ``epoch`` drive every resume."""
    frame = parse_frame(raw)
    seq, epoch = frame.get("seq"), frame.get("epoch")
    if frame.get("type") != "welcome":
        raise ValueError("the server did not start with a welcome")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(epoch, str):
        raise ValueError("the welcome has no valid seq and epoch")
    return frame


def base_url(url: str, session: str) -> str:
    """The server's base URL from what a caller may pass: ``ws://host:port``, ``http://host:port``,
    ``.../ws`` or the full ``.../ws/<session>``."""
    url = url.rstrip("/")
    for scheme, ws_scheme in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(scheme):
            url = ws_scheme + url[len(scheme) :]
    for suffix in (f"/ws/{urllib.parse.quote(session, safe='')}", f"/ws/{session}", "/ws"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


class Client:
    """A resuming session client; create it with :func:`connect`."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        session: str,
        *,
        backoff: Backoff = Backoff(),
        connect_timeout: float = 10.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        max_message_size: int = 1 << 20,
    ) -> None:
        self.base_url = base_url(url, session)
        self.session = session
        self.backoff = backoff
        self._token = token
        self._connect_timeout = connect_timeout
        self._ping = (ping_interval, ping_timeout)
        self._max_message_size = max_message_size
        self._conn: WebSocketClientConnection | None = None
        self._frames: asyncio.Queue[Any] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.welcome: dict[str, Any] | None = None
        self.epoch: str | None = None
        self.last_seq: int | None = None
        self.reconnects = 0
        self.closed: SessionClosed | None = None
        self._failures = 0  # consecutive failed attempts, short-lived connections included
        self._welcomed_at = 0.0

    # -- connection management -------------------------------------------------------

    async def _token_value(self) -> str:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        return token

    def _url(self) -> str:
        url = f"{self.base_url}/ws/{urllib.parse.quote(self.session, safe='')}"
        if self.epoch is not None and self.last_seq is not None:
            url += "?" + urllib.parse.urlencode({"since": self.last_seq, "epoch": self.epoch})
        return url

    async def _open_once(self) -> tuple[WebSocketClientConnection, dict[str, Any]]:
        """Connect and read the welcome; raises SessionClosed if refused for good."""
        request = HTTPRequest(
            self._url(),
            headers={"Authorization": f"Bearer {await self._token_value()}"},
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
            raise ConnectionError(f"closed before welcome ({code}): {reason}")
        try:
            return conn, parse_welcome(raw)
        except ValueError as exc:
            raise self._protocol_error(conn, exc) from None

    async def _open(self) -> dict[str, Any]:
        """Connect, after the backoff delay if the last attempts failed; returns the welcome."""
        while True:
            if self._failures:
                delay = self.backoff.delay(self._failures - 1)
                log.debug("reconnecting in %.2fs (%d failed attempts)", delay, self._failures)
                await asyncio.sleep(delay)
            try:
                conn, welcome = await self._open_once()
            except SessionClosed:
                raise
            except HTTPClientError as exc:
                if not retryable_status(exc.code):
                    raise SessionClosed(None, f"handshake refused: {exc}", status=exc.code) from None
                self._failed(f"handshake refused: {exc}")
            except (OSError, TimeoutError) as exc:  # ConnectionError, StreamClosedError included
                self._failed(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a broken handshake or token provider: retried, but visibly
                log.warning("connect attempt failed on %s", type(exc).__name__)
                self._failed(f"{type(exc).__name__}: {exc}")
            else:
                self._conn = conn
                self._welcomed_at = time.monotonic()
                return welcome

    def _failed(self, why: str) -> None:
        """Count one failed attempt; raises SessionClosed once ``max_attempts`` is reached."""
        self._failures += 1
        limit = self.backoff.max_attempts
        if limit is not None and self._failures >= limit:
            raise SessionClosed(None, f"gave up after {self._failures} attempts: {why}")
        log.debug("attempt %d failed: %s", self._failures, why)

    def _protocol_error(self, conn: WebSocketClientConnection, exc: ValueError) -> SessionClosed:
        """Retrying would meet the same broken server, and skipping would hide a gap: stop loudly."""
        conn.close(1002, "protocol error")
        log.warning("closing: the server broke the protocol: %s", exc)
        return SessionClosed(None, f"protocol error: {exc}")

    def _accept_welcome(self, welcome: dict[str, Any]) -> None:
        self.welcome = welcome
        if welcome.get("recovered") and welcome.get("epoch") == self.epoch:
            return  # replayed frames follow; last_seq advances as they arrive
        self.epoch = welcome.get("epoch")
        self.last_seq = welcome.get("seq")

    async def _run(self) -> None:
        """Read frames; reconnect on drops; stop on terminal codes."""
        try:
            while True:
                conn = self._conn
                assert conn is not None
                while (raw := await conn.read_message()) is not None:
                    try:
                        frame = parse_frame(raw)
                    except ValueError as exc:
                        raise self._protocol_error(conn, exc) from None
                    self._deliver(frame)
                self._connected.clear()
                conn.close()  # a dropped connection still holds its protocol until closed
                if self._closing:
                    return
                code = conn.close_code
                if not should_reconnect(code):
                    raise SessionClosed(code, conn.close_reason or "")
                lived = time.monotonic() - self._welcomed_at
                if lived >= self.backoff.stable_after:
                    self._failures = 0
                else:
                    self._failed(f"closed {lived:.2f}s after its welcome ({code})")
                self.reconnects += 1
                welcome = await self._open()
                self._accept_welcome(welcome)
                self._connected.set()
                self._frames.put_nowait(welcome)
        except SessionClosed as exc:
            self.closed = exc
            self._frames.put_nowait(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must still end iteration loudly, not silently
            log.warning("client stopped on an unexpected error", exc_info=True)
            self.closed = SessionClosed(None, f"client error: {type(exc).__name__}")
            self._frames.put_nowait(self.closed)
        finally:
            self._connected.clear()
            self._frames.put_nowait(_CLOSED)

    def _deliver(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "message":
            seq = frame.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and self.last_seq is not None:
                if seq <= self.last_seq:
                    return  # already delivered before the drop
                self.last_seq = seq
        self._frames.put_nowait(frame)

    async def start(self) -> dict[str, Any]:
        welcome = await self._open()
        self._accept_welcome(welcome)
        self._connected.set()
        self._runner = asyncio.ensure_future(self._run())
        return welcome

    # -- public API ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def send(self, data: Any, *, timeout: float | None = 30.0) -> None:
        """Publish ``data``; waits (up to ``timeout``) while the client is reconnecting.

        Delivery is at-most-once across a drop: your own copy arriving in the
        stream is the acknowledgement.
        """
        if self.closed is not None:
            raise self.closed
        await self.wait_connected(timeout)
        assert self._conn is not None
        frame = json.dumps({"type": "message", "data": data}, ensure_ascii=False, separators=(",", ":"))
        await self._conn.write_message(frame)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._frames.get()
        if item is _CLOSED:
            self._frames.put_nowait(_CLOSED)  # keep ending for later readers
            raise StopAsyncIteration
        if isinstance(item, SessionClosed):
            raise item
        frame: dict[str, Any] = item
        return frame

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame, like one step of ``async for``."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def drop(self) -> None:
        """Close the current socket as if the network dropped (the client reconnects)."""
        if self._conn is not None and self._conn.protocol is not None:
            stream = getattr(self._conn.protocol, "stream", None)
            if stream is not None:
                stream.close()

    async def close(self) -> None:
        """Close for good; iteration ends after the frames already received."""
        self._closing = True
        runner = self._runner
        if self.connected and self._conn is not None and runner is not None:
            self._conn.close(1000, "client closing")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), 5)
        if runner is not None and not runner.done():
            runner.cancel()  # mid-reconnect: stop the backoff loop
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if self._conn is not None:
            self._conn.close(1000, "client closing")


async def connect(url: str, token: TokenSource, session: str, **options: Any) -> Client:
    """Connect to ``url`` (``ws://host:port``) and join ``session``; returns once welcomed.

    ``token`` is a JWT, or a callable (plain or async) returning a fresh one
    for every (re)connect. ``options`` go to :class:`Client` (``backoff``,
    ``connect_timeout``, ``ping_interval``, ``ping_timeout``, ``max_message_size``).
    Raises :class:`SessionClosed` if the server refuses for good or retries run out.
    """
    client = Client(url, token, session, **options)
    await client.start()
    return client
