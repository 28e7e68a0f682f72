"""One session per socket (``/ws/<session>``): the client :func:`tornado_ws.client.connect` returns.

On any drop it reconnects with exponential backoff and jitter, resuming with ``since``/``epoch``.
A connection that dies within ``Backoff.stable_after`` seconds of its welcome counts as a failed
attempt, so a server that welcomes and closes at once sees a slowing trickle of attempts, not a
storm. Messages already seen (``seq <= last_seq``) are dropped, so replays never duplicate. Each
reconnect yields the server's new ``welcome`` frame: ``recovered: true`` means nothing was lost;
``recovered: false`` means history did not reach back far enough and the caller should reload
its state (live messages continue after the welcome's ``seq``).

The stream never ends silently: iteration raises :class:`SessionClosed` on close codes that mean
"do not come back" (1008, 1009, 4003, 4004), on an HTTP refusal of the handshake that retrying
cannot fix (4xx but 429), on a frame that breaks the protocol (not JSON, not an object, nested
too deeply, a bad welcome) and when ``max_attempts`` runs out. Only :meth:`SessionClient.close`
ends it with ``StopAsyncIteration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from tornado_ws.client.base import (
    DEFAULT_BACKOFF,
    Backoff,
    Dialer,
    SessionClosed,
    TokenSource,
    base_url,
    discard_result,
    log,
    parse_frame,
    parse_welcome,
    protocol_error,
)
from tornado_ws.client.presence import Presence, signal_wire
from tornado_ws.client.roster import Roster
from tornado_ws.errors import should_reconnect

_CLOSED = object()


class SessionClient:
    """A resuming client of one session; create it with :func:`tornado_ws.client.connect`."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        session: str,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect_timeout: float = 10.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        max_message_size: int = 1 << 20,
    ) -> None:
        self.base_url = base_url(url, session)
        self.session = session
        self.backoff = backoff
        self._dialer = Dialer(
            token,
            backoff,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_message_size=max_message_size,
        )
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
        self._presence = Presence(session, self._send_wire, backoff, multiplexed=False)
        self._roster = Roster()

    # -- connection management -------------------------------------------------------

    def _url(self) -> str:
        url = f"{self.base_url}/ws/{urllib.parse.quote(self.session, safe='')}"
        if self.epoch is not None and self.last_seq is not None:
            url += "?" + urllib.parse.urlencode({"since": self.last_seq, "epoch": self.epoch})
        return url

    async def _open(self) -> dict[str, Any]:
        self._conn, welcome = await self._dialer.open(self._url(), parse_welcome)
        return welcome

    def _accept_welcome(self, welcome: dict[str, Any]) -> None:
        self.welcome = welcome
        self._roster.apply(welcome)
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
                        raise protocol_error(conn, exc) from None
                    self._deliver(frame)
                self._connected.clear()
                self._presence.down()
                conn.close()  # a dropped connection still holds its protocol until closed
                if self._closing:
                    return
                code = conn.close_code
                if not should_reconnect(code):
                    raise SessionClosed(code, conn.close_reason or "")
                self._dialer.dropped(code)
                self.reconnects += 1
                welcome = await self._open()
                self._accept_welcome(welcome)
                self._connected.set()
                self._frames.put_nowait(welcome)
                self._presence.welcomed(str(welcome.get("user_id")))
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
            self._presence.end(self.closed or SessionClosed(None, "client closed", session=self.session))
            self._frames.put_nowait(_CLOSED)

    def _deliver(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            seq = frame.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and self.last_seq is not None:
                if seq <= self.last_seq:
                    return  # already delivered before the drop
                self.last_seq = seq
        else:
            self._roster.apply(frame)
            if kind == "presence_state":
                self._presence.echo(frame)
            elif kind == "error" and "id" not in frame:
                self._presence.error(frame)
        self._frames.put_nowait(frame)

    def _send_wire(self, wire: bytes) -> bool:
        conn = self._conn
        if conn is None or not self._connected.is_set():
            return False
        try:
            conn.write_message(wire).add_done_callback(discard_result)
        except WebSocketClosedError:
            return False  # the read loop notices the drop and reconnects
        return True

    async def start(self) -> dict[str, Any]:
        welcome = await self._open()
        self._accept_welcome(welcome)
        self._connected.set()
        self._runner = asyncio.ensure_future(self._run())
        self._presence.welcomed(str(welcome.get("user_id")))
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

    async def set_presence(self, state: dict[str, Any], *, timeout: float | None = 30.0) -> None:
        """Set this connection's presence state; returns once the server announced it (the own
        ``presence_state``), and sends it again after every reconnect. As
        :meth:`tornado_ws.client.Subscription.set_presence` (docs/client.md)."""
        if self.closed is not None:
            raise self.closed
        if self._closing:
            raise SessionClosed(None, "client closed", session=self.session)
        await self._presence.set(state, timeout)

    @property
    def presence(self) -> dict[str, Any] | None:
        """This connection's state, as last set (and not refused); ``None`` if never set."""
        return self._presence.state

    def signal(self, data: Any, *, key: str | None = None) -> bool:
        """Send an ephemeral ``signal`` to the session's other connections; ``False`` (dropped)
        while disconnected. As :meth:`tornado_ws.client.Subscription.signal`."""
        return self._send_wire(signal_wire(None, data, key))

    @property
    def participants(self) -> Mapping[str, Mapping[str, Any]]:
        """``user_id -> {"user_id", "name"?, "state"?}``, kept current by the frames as they arrive."""
        return self._roster.view

    @property
    def participant_count(self) -> int | None:
        return self._roster.count

    @property
    def participants_truncated(self) -> bool:
        """Whether :attr:`participants` may miss some (a truncated welcome, a full summary)."""
        return self._roster.truncated

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
        drop_socket(self._conn)

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


def drop_socket(conn: WebSocketClientConnection | None) -> None:
    """Close a socket under Tornado's feet, as a network drop would (tests, demos)."""
    if conn is not None and conn.protocol is not None:
        stream = getattr(conn.protocol, "stream", None)
        if stream is not None:
            stream.close()
