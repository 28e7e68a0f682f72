"""An asyncio client that hides reconnects: one gapless, duplicate-free stream.

    client = await connect("ws://127.0.0.1:8888", token, "standup")
    await client.send({"text": "hi"})
    async for frame in client:          # message / user_joined / user_left / error / welcome
        ...
    await client.close()

On any drop it reconnects with exponential backoff and full jitter, resuming
with ``since``/``epoch``. Messages already seen (``seq <= last_seq``) are
dropped, so replays never duplicate. Each reconnect yields the server's new
``welcome`` frame: ``recovered: true`` means nothing was lost; ``recovered:
false`` means history did not reach back far enough and the caller should
reload its state (live messages continue after the welcome's ``seq``).

Close codes that mean "do not come back" (1008, 1009, 4003, 4004) stop the
client: iteration raises :class:`SessionClosed`. Built on Tornado's own
``websocket_connect``; no other dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import random
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .errors import should_reconnect

log = logging.getLogger("tornado_ws.client")

TokenSource = str | Callable[[], str | Awaitable[str]]


class SessionClosed(Exception):
    """The client stopped for good: a terminal close code, or retries exhausted."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"session closed ({code}): {reason}")
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits U(0, min(cap, base * 2**n))."""

    base: float = 0.1
    cap: float = 10.0
    #: Consecutive failed attempts before giving up; ``None`` retries forever.
    max_attempts: int | None = None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 62)))
        return (rng or random).uniform(0, ceiling)


_CLOSED = object()


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
        frame = json.loads(raw)
        if not isinstance(frame, dict) or frame.get("type") != "welcome":
            conn.close()
            raise ConnectionError("the server did not start with a welcome")
        return conn, frame

    async def _open(self) -> dict[str, Any]:
        """Connect with retries; returns the welcome."""
        attempt = 0
        while True:
            try:
                conn, welcome = await self._open_once()
            except SessionClosed:
                raise
            except (OSError, ValueError, TimeoutError, ConnectionError) as exc:
                attempt += 1
                if self.backoff.max_attempts is not None and attempt >= self.backoff.max_attempts:
                    raise SessionClosed(None, f"gave up after {attempt} attempts: {exc}") from None
                delay = self.backoff.delay(attempt - 1)
                log.debug("connect attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._conn = conn
            return welcome

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
                    self._deliver(raw)
                self._connected.clear()
                conn.close()  # a dropped connection still holds its protocol until closed
                if self._closing:
                    return
                if not should_reconnect(conn.close_code):
                    raise SessionClosed(conn.close_code, conn.close_reason or "")
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
        finally:
            self._connected.clear()
            self._frames.put_nowait(_CLOSED)

    def _deliver(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        if frame.get("type") == "message":
            seq = frame.get("seq")
            if isinstance(seq, int) and self.last_seq is not None:
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
