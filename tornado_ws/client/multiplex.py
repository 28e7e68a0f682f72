"""Many sessions over one socket (``GET /ws``): :class:`Client` and its :class:`Subscription` objects.

The client owns the socket: it dials (with the backoff of :class:`Backoff`), reads every frame and
routes it by ``session_id`` to the session's :class:`Subscription`, or by ``id`` (``ack``, and an
``error`` refusing a message) to the publish waiting for it. After a drop it dials again and every
subscription rejoins with its own ``since``/``epoch``, then resends what was never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import secrets
from types import TracebackType
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
    protocol_error,
)
from tornado_ws.client.session import drop_socket
from tornado_ws.client.subscription import State, Subscription
from tornado_ws.errors import should_reconnect


@dataclasses.dataclass(frozen=True)
class Connected:
    """The server's ``connected`` frame: who this socket is, until when its token holds."""

    user_id: str
    org_id: str
    connection_id: str
    #: The token's ``exp`` (seconds since the epoch), or ``None``.
    expires_at: float | None


def parse_connected(raw: str | bytes) -> dict[str, Any]:
    """The first frame of a ``/ws`` connection, checked."""
    frame = parse_frame(raw)
    if frame.get("type") != "connected":
        raise ValueError("the server did not start with connected")
    if not all(isinstance(frame.get(key), str) for key in ("user_id", "org_id", "connection_id")):
        raise ValueError("the connected frame has no valid user_id, org_id and connection_id")
    expires_at = frame.get("expires_at")
    if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(expires_at, int | float)):
        raise ValueError("the connected frame has no valid expires_at")
    return frame


class Client:
    """One connection to ``GET /ws`` carrying any number of sessions.

    ``Client(url, token)`` does no I/O; the first :meth:`join` (or :meth:`connect`, or
    ``async with``) starts it. ``url`` is the server base (``ws://host:port``, ``http://...``, or
    one ending in ``/ws``); ``token`` a JWT or a callable (plain or async) asked on every (re)connect.
    Options: ``backoff``, ``connect_timeout``, ``ping_interval``, ``ping_timeout``,
    ``max_message_size`` (as for :func:`tornado_ws.client.connect`).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect_timeout: float = 10.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        max_message_size: int = 1 << 20,
    ) -> None:
        self.base_url = base_url(url)
        self.backoff = backoff
        self._dialer = Dialer(
            token,
            backoff,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_message_size=max_message_size,
        )
        #: The current socket's ``connected`` frame; ``None`` while (re)connecting.
        self.connected: Connected | None = None
        #: Why the client stopped for good; ``None`` while it runs (or after :meth:`close`).
        self.closed: SessionClosed | None = None
        self.reconnects = 0
        self._conn: WebSocketClientConnection | None = None
        self._up = asyncio.Event()  # connected, or stopped
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False
        self._subscriptions: dict[str, Subscription] = {}
        self._by_id: dict[str, Subscription] = {}
        # Ids unique across clients and restarts without coordination: a random prefix per client.
        self._id_prefix = secrets.token_urlsafe(9)
        self._ids = itertools.count(1)

    # -- public API ---------------------------------------------------------------

    def join(self, session: str, *, since: int | None = None, epoch: str | None = None) -> Subscription:
        """Join ``session`` (starting the client if needed) and return its stream at once.

        ``await`` it for the first welcome. ``since``/``epoch`` resume from a position the caller
        kept (both or neither). Joining a session this client is already in raises ``ValueError``.
        """
        if self._stopped:
            raise self.closed or SessionClosed(None, "client closed")
        if not isinstance(session, str) or not session:
            raise ValueError("a session id is a non-empty string")
        session.encode()  # a lone surrogate could never be sent: UnicodeEncodeError, a ValueError
        if session in self._subscriptions:
            raise ValueError(f"already joined {session!r} on this client")
        subscription = Subscription(self, session, since=since, epoch=epoch)
        self._subscriptions[session] = subscription
        self._start()
        if self.connected is not None:
            subscription.connection_up()
        return subscription

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The sessions joined and not ended, by id."""
        return dict(self._subscriptions)

    async def connect(self, timeout: float | None = None) -> Connected:
        """Start (if needed) and wait for a connection; raises SessionClosed if refused for good."""
        self._start()
        await asyncio.wait_for(self._up.wait(), timeout)
        if self.connected is None:
            raise self.closed or SessionClosed(None, "client closed")
        return self.connected

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def drop(self) -> None:
        """Close the current socket as if the network dropped (the client reconnects)."""
        drop_socket(self._conn)

    async def close(self) -> None:
        """Close for good: every stream stops (``StopAsyncIteration``), unacked publishes raise."""
        self._stopped = True
        runner = self._runner
        if runner is not None and self.connected is not None and self._conn is not None:
            self._conn.close(1000, "client closing")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), 5)
        if runner is not None and not runner.done():
            runner.cancel()  # mid-reconnect: stop the backoff loop
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if self._conn is not None:
            self._conn.close(1000, "client closing")
        self._stop(None)

    # -- for subscriptions ------------------------------------------------------------

    def next_message_id(self) -> str:
        return f"{self._id_prefix}.{next(self._ids)}"

    def track(self, message_id: str, subscription: Subscription) -> None:
        self._by_id[message_id] = subscription

    def untrack(self, message_id: str) -> None:
        self._by_id.pop(message_id, None)

    def forget(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.session) is subscription:
            del self._subscriptions[subscription.session]

    def send(self, frame: dict[str, Any]) -> bool:
        return self.send_wire(json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode())

    def send_wire(self, wire: bytes) -> bool:
        """Write one frame now, in call order; ``False`` if there is no socket to write to."""
        conn = self._conn
        if conn is None or self.connected is None:
            return False
        try:
            conn.write_message(wire).add_done_callback(discard_result)
        except WebSocketClosedError:
            return False  # the read loop notices the drop and reconnects
        return True

    # -- the socket -------------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is None and not self._stopped:
            self._runner = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Dial, join every session, read frames; dial again on drops; stop on terminal codes."""
        try:
            while True:
                conn, hello = await self._dialer.open(f"{self.base_url}/ws", parse_connected)
                self._conn = conn
                self.connected = Connected(
                    hello["user_id"], hello["org_id"], hello["connection_id"], hello.get("expires_at")
                )
                self._up.set()
                for subscription in list(self._subscriptions.values()):
                    subscription.connection_up()
                while (raw := await conn.read_message()) is not None:
                    try:
                        self._dispatch(parse_frame(raw))
                    except ValueError as exc:
                        raise protocol_error(conn, exc) from None
                self._down()
                conn.close()  # a dropped connection still holds its protocol until closed
                if self._stopped:
                    return
                code = conn.close_code
                if not should_reconnect(code):
                    raise SessionClosed(code, conn.close_reason or "")
                self._dialer.dropped(code)
                self.reconnects += 1
        except SessionClosed as exc:
            self._stop(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must still end every stream loudly, not silently
            log.warning("client stopped on an unexpected error", exc_info=True)
            self._stop(SessionClosed(None, f"client error: {type(exc).__name__}"))
        finally:
            self._down()
            self._stop(None)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind, message_id = frame.get("type"), frame.get("id")
        if kind == "ack":
            owner = self._by_id.get(message_id) if isinstance(message_id, str) else None
            if owner is not None:
                owner.acked(str(message_id), frame.get("seq"))
            return  # an ack is the publish's answer, not a frame of the stream
        if kind == "error" and isinstance(message_id, str) and (owner := self._by_id.get(message_id)) is not None:
            owner.refused(message_id, frame)
        session = frame.get("session_id")
        subscription = self._subscriptions.get(session) if isinstance(session, str) else None
        if subscription is not None:
            subscription.deliver(frame)
        elif kind == "error":
            log.warning("server error on the connection: %s %s", frame.get("code"), frame.get("message"))

    def _down(self) -> None:
        if self.connected is None:
            return
        self.connected = None
        self._up.clear()
        for subscription in list(self._subscriptions.values()):
            subscription.connection_down()

    def _stop(self, closed: SessionClosed | None) -> None:
        """Stop for good; ``closed`` (if any) ends every stream with that exception."""
        self._stopped = True
        if closed is not None and self.closed is None:
            self.closed = closed
        self.connected = None
        self._up.set()  # wakes connect() waiters, who find no connection
        for subscription in list(self._subscriptions.values()):
            if subscription.state is not State.ENDED:
                subscription.end(closed, why="client closed")
