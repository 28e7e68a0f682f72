"""One session of a multiplexed :class:`~tornado_ws.client.Client`: its stream and its publishes.

A :class:`Subscription` is a small state machine driven by its client::

    joining --welcome--> live --socket drop--> joining --welcome--> live ...
       live --left 1011/1012/1013--> waiting --backoff--> joining
    joining --error rate_limited (the join dropped)--> waiting --backoff--> joining
       any --leave()--> leaving --left 1000--> ended
       any --left 1008/4003/4004, terminal socket close, close()--> ended

It keeps the session's ``epoch``/``last_seq`` (every rejoin resumes from them, and frames already
seen are dropped) and the messages published but not yet acknowledged, in publish order: each is
sent once per membership, again after every welcome until its ``ack`` arrives. It also keeps this
connection's presence state (:class:`~tornado_ws.client.presence.Presence`: sent again after every
welcome) and the participants view (:class:`~tornado_ws.client.roster.Roster`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import re
import time
from collections.abc import AsyncIterator, Generator, Mapping
from typing import TYPE_CHECKING, Any

from tornado_ws.client.base import PublishError, SessionClosed, check_welcome, is_seq, log
from tornado_ws.client.presence import Presence, signal_wire
from tornado_ws.client.roster import Roster
from tornado_ws.errors import should_reconnect

if TYPE_CHECKING:
    from tornado_ws.client.multiplex import Client

#: What the server accepts as a message id.
MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: The server answers this to a message for a session it no longer counts us in: the message
#: was not published, and is resent after the next welcome.
NOT_JOINED = "not_joined"
#: Without an ``id``, on this session: the join budget dropped our join or leave.
RATE_LIMITED = "rate_limited"
_END = object()


class State(enum.Enum):
    JOINING = "joining"  # a join is (or will be, once connected) on its way
    LIVE = "live"  # welcomed on the current socket
    WAITING = "waiting"  # left with 1012/1013: rejoining after the backoff
    LEAVING = "leaving"  # leave() sent, waiting for left 1000
    ENDED = "ended"


@dataclasses.dataclass(eq=False)
class Pending:
    """A published message until its ack."""

    id: str
    wire: bytes
    future: asyncio.Future[int]
    #: The membership (count of welcomes) it was last sent in; ``None``: not sent in this one.
    sent_in: int | None = None
    sends: int = 0


class Subscription:
    """A session joined through a :class:`~tornado_ws.client.Client` (see :meth:`Client.join`).

    ``await subscription`` waits for its first welcome; ``async for frame in subscription`` yields
    its server frames; :meth:`publish` sends acknowledged, idempotent messages; :meth:`set_presence`
    and :meth:`signal` the ephemeral ones; :attr:`participants` is who is there; :meth:`leave`.
    """

    def __init__(self, client: Client, session: str, *, since: int | None, epoch: str | None) -> None:
        self.client = client
        self.session = session
        self.epoch = epoch if since is not None else None
        self.last_seq = since if epoch is not None else None
        #: The latest welcome, ``None`` until the first.
        self.welcome: dict[str, Any] | None = None
        #: How often the session was (re)joined: welcomes received.
        self.welcomes = 0
        #: Messages sent again, after a reconnect or a rejoin, with the id they had.
        self.resent = 0
        self.closed: SessionClosed | None = None
        #: What publish() raises once the stream ended.
        self._refusal = SessionClosed(None, "ended", session=session)
        self.state = State.JOINING
        self._frames: asyncio.Queue[Any] = asyncio.Queue()
        self._settled = asyncio.Event()  # first welcome, or the end
        self._ended = asyncio.Event()
        self._pending: dict[str, Pending] = {}
        self._rejoin: asyncio.TimerHandle | None = None
        self._failures = 0  # consecutive left 1012/1013 without a stable membership between
        self._welcomed_at = 0.0
        self._presence = Presence(session, client.send_wire, client.backoff, multiplexed=True)
        self._roster = Roster()

    # -- public API ---------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.joined().__await__()

    async def joined(self, timeout: float | None = None) -> Subscription:
        """Wait for the first welcome (connecting if needed); raises SessionClosed if it ended first."""
        await asyncio.wait_for(self._settled.wait(), timeout)
        if self.welcome is None:
            raise self._refusal
        return self

    @property
    def unacked(self) -> int:
        """Messages published and not yet acknowledged."""
        return len(self._pending)

    async def publish(self, data: Any, *, id: str | None = None, timeout: float | None = 30.0) -> int:
        """Publish ``data`` once; returns its ``seq`` from the server's ``ack``.

        The message gets ``id`` (or a fresh one). Sent now if the session is joined, else after
        its next welcome; if the connection drops first it is sent again, with the same id, after
        the rejoin (the server publishes an id only once: a resend is acked with the original seq).
        Raises :class:`PublishError` when the server refuses it (``error`` with its id),
        :class:`SessionClosed` if the stream ends first, ``TimeoutError`` after ``timeout``
        (then it may or may not have been published, and it is no longer resent).
        """
        self._check_open()
        message_id = id if id is not None else self.client.next_message_id()
        if not MESSAGE_ID.fullmatch(message_id):
            raise ValueError("a message id is 1-64 characters of [A-Za-z0-9._:-]")
        if message_id in self._pending:
            raise ValueError(f"message {message_id!r} is already waiting for its ack")
        frame = {"type": "message", "session": self.session, "id": message_id, "data": data}
        # Encoded once for every resend; what cannot be sent (NaN, a lone surrogate) raises here.
        wire = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        pending = Pending(message_id, wire, asyncio.get_running_loop().create_future())
        self._pending[message_id] = pending
        self.client.track(message_id, self)
        if self.state is State.LIVE:
            self._send_pending(pending)
        try:
            return await asyncio.wait_for(pending.future, timeout)
        finally:
            self._forget(pending)

    async def set_presence(self, state: dict[str, Any], *, timeout: float | None = 30.0) -> None:
        """Set this connection's presence state in the session; returns once the server announced it.

        ``state`` is a dict (``TypeError`` otherwise; ``ValueError`` for what JSON cannot carry).
        The server answers nothing on success: this waits for the user's own ``presence_state``
        (also yielded by the stream). Sent now if the session is joined, else after its next
        welcome; the state is kept and sent again after every reconnect or rejoin. A call made
        while an earlier state is still on its way replaces any state still waiting (that call
        returns at once): the latest wins, as with the server's coalescing. Raises
        :class:`~tornado_ws.client.PresenceError` (``state_too_large``, ``unavailable``) when the
        server refuses it (the state is then the one before), :class:`SessionClosed` if the stream
        ends first, ``TimeoutError`` after ``timeout`` (the state is still sent).
        """
        self._check_open()
        await self._presence.set(state, timeout)

    @property
    def presence(self) -> dict[str, Any] | None:
        """This connection's state, as last set (and not refused); ``None`` if never set."""
        return self._presence.state

    def signal(self, data: Any, *, key: str | None = None) -> bool:
        """Send an ephemeral ``signal`` to the session's other connections (cursors, typing...).

        Fire-and-forget: no ``seq``, no answer, never stored or replayed. A newer signal with the same
        ``key`` may replace an older one still on its way to a slow member. Returns ``False``, and
        drops it, while the session is not joined (never queued nor resent: a signal is only worth
        something now). ``ValueError``/``TypeError`` for a ``key`` that is not 1-64 characters or
        ``data`` that JSON cannot carry. Over the server's ``--signal-rate`` signals are dropped with
        an ``error`` ``rate_limited`` in the stream (at most one a second).
        """
        wire = signal_wire(self.session, data, key)
        return self.state is State.LIVE and self.client.send_wire(wire)

    @property
    def participants(self) -> Mapping[str, Mapping[str, Any]]:
        """Who is in the session: ``user_id -> {"user_id", "name"?, "state"?}``, read-only, kept
        current by the frames as they arrive (before the iteration yields them). Empty before the
        first welcome; see :attr:`participants_truncated`."""
        return self._roster.view

    @property
    def participant_count(self) -> int | None:
        """The session's number of participants, as the server last said (``None`` before a welcome)."""
        return self._roster.count

    @property
    def participants_truncated(self) -> bool:
        """Whether :attr:`participants` may miss some: the welcome listed only the first
        ``--presence-roster-limit`` (``participants_truncated``), or a ``presence_summary`` listed
        as many users as it can (100). The full roster: ``GET /api/sessions/<id>/presence``."""
        return self._roster.truncated

    async def leave(self, timeout: float | None = 10.0) -> None:
        """Leave the session: iteration ends (``StopAsyncIteration``) after the ``left`` frame.

        Messages still waiting for their ack are refused with ``SessionClosed(1000, "left")``.
        Without a connection there is no membership to end: the stream ends at once.
        """
        if self.state is State.ENDED:
            return
        if self.state in (State.LIVE, State.JOINING) and self.client.send({"type": "leave", "session": self.session}):
            self.state = State.LEAVING
            try:
                await asyncio.wait_for(self._ended.wait(), timeout)
            finally:
                self.end(None)  # a timeout still ends the stream here
        else:
            self.end(None)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._frames.get()
        if isinstance(item, SessionClosed):
            self._frames.put_nowait(item)  # the same end for every later read
            raise item
        if item is _END:
            self._frames.put_nowait(_END)
            raise StopAsyncIteration
        frame: dict[str, Any] = item
        return frame

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame, like one step of ``async for``."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    # -- driven by the client ---------------------------------------------------------

    def join_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "session": self.session}
        if self.epoch is not None and self.last_seq is not None:
            frame.update(since=self.last_seq, epoch=self.epoch)
        return frame

    def connection_up(self) -> None:
        """A socket is open: join (again), unless a rejoin is waiting for its backoff."""
        if self.state in (State.JOINING, State.LIVE) and self.client.send(self.join_frame()):
            self.state = State.JOINING

    def connection_down(self) -> None:
        """The socket is gone, and every membership with it."""
        if self.state is State.LEAVING:
            self.end(None)  # nothing left to leave
            return
        if self.state is State.LIVE:
            self.state = State.JOINING
        self._presence.down()
        for pending in self._pending.values():
            pending.sent_in = None

    def deliver(self, frame: dict[str, Any]) -> None:
        """A server frame about this session; ``ValueError`` for a welcome that cannot drive a resume."""
        kind = frame.get("type")
        if kind == "welcome":
            self._welcomed(check_welcome(frame))
        elif kind == "message":
            seq = frame.get("seq")
            if is_seq(seq) and self.last_seq is not None:
                if seq <= self.last_seq:
                    return  # already delivered before the drop
                self.last_seq = seq
            self._frames.put_nowait(frame)
        elif kind == "left":
            self._frames.put_nowait(frame)
            self._left(frame)
        else:
            self._roster.apply(frame)
            if kind == "presence_state":
                self._presence.echo(frame)
            self._frames.put_nowait(frame)
            if kind == "error" and "id" not in frame:
                if self.state is State.LIVE:
                    self._presence.error(frame)
                elif frame.get("code") == RATE_LIMITED:
                    self._dropped()

    def acked(self, message_id: str, seq: object) -> None:
        pending = self._pending.pop(message_id, None)
        if pending is None:
            return  # acked after its timeout
        if not is_seq(seq):
            raise ValueError("an ack has no valid seq")
        if not pending.future.done():
            pending.future.set_result(seq)

    def refused(self, message_id: str, frame: dict[str, Any]) -> None:
        """An ``error`` frame carrying one of our message ids."""
        pending = self._pending.get(message_id)
        if pending is None:
            return
        code, text = str(frame.get("code")), str(frame.get("message", ""))
        if code == NOT_JOINED and self.state is not State.ENDED:
            pending.sent_in = None  # sent as the membership ended: again after the next welcome
            return
        del self._pending[message_id]
        if not pending.future.done():
            pending.future.set_exception(PublishError(code, text, message_id=message_id, session=self.session))

    def end(self, closed: SessionClosed | None, *, why: str = "left") -> None:
        """End the stream: ``closed`` raises from iteration, ``None`` stops it. Unacknowledged
        publishes raise ``closed``, or ``SessionClosed(None, why)``."""
        if self.state is State.ENDED:
            return
        self.state = State.ENDED
        self.closed = closed
        self._refusal = closed or SessionClosed(1000 if why == "left" else None, why, session=self.session)
        if self._rejoin is not None:
            self._rejoin.cancel()
        self.client.forget(self)
        for pending in self._pending.values():
            self.client.untrack(pending.id)
            if not pending.future.done():
                pending.future.set_exception(self._refusal)
                pending.future.exception()  # a publish that timed out no longer waits for it
        self._pending.clear()
        self._presence.end(self._refusal)
        self._frames.put_nowait(closed if closed is not None else _END)
        self._settled.set()
        self._ended.set()

    # -- inside ---------------------------------------------------------------------

    def _welcomed(self, welcome: dict[str, Any]) -> None:
        self.welcome = welcome
        self.welcomes += 1
        self._roster.apply(welcome)
        self._welcomed_at = time.monotonic()
        if not (welcome.get("recovered") and welcome.get("epoch") == self.epoch):
            self.epoch = welcome["epoch"]
            self.last_seq = welcome["seq"]
        # else: replayed frames follow; last_seq advances as they arrive
        self._frames.put_nowait(welcome)
        self._settled.set()
        if self.state is not State.JOINING:
            return  # leaving: the left follows
        self.state = State.LIVE
        for pending in list(self._pending.values()):
            self._send_pending(pending)
        self._presence.welcomed(str(welcome.get("user_id")))

    def _check_open(self) -> None:
        if self.state is State.ENDED:
            raise self._refusal
        if self.state is State.LEAVING:
            raise SessionClosed(1000, "left", session=self.session)

    def _send_pending(self, pending: Pending) -> None:
        if pending.sent_in == self.welcomes:
            return
        if self.client.send_wire(pending.wire):
            pending.sent_in = self.welcomes
            if pending.sends:
                self.resent += 1
            pending.sends += 1

    def _left(self, frame: dict[str, Any]) -> None:
        code, reason = frame.get("code"), str(frame.get("reason", ""))
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        if self.state is State.LEAVING and code == 1000:
            self.end(None)
        elif not should_reconnect(code) or self.state is State.LEAVING:
            self.end(SessionClosed(code, reason, session=self.session))
        else:
            self._rejoin_later(code, reason)

    def _dropped(self) -> None:
        """The server dropped our join or leave unanswered (over the join budget): again later."""
        if self.state is State.JOINING:
            self._rejoin_later(None, "join rate limited")
        elif self.state is State.LEAVING:
            self._retry_later("leave rate limited")

    def _rejoin_later(self, code: int | None, reason: str) -> None:
        was_live, self.state = self.state is State.LIVE, State.WAITING
        self._presence.down()
        if was_live and time.monotonic() - self._welcomed_at >= self.client.backoff.stable_after:
            self._failures = 0
        for pending in self._pending.values():
            pending.sent_in = None
        self._retry_later(f"left ({code}) {reason}" if code is not None else reason)

    def _retry_later(self, why: str) -> None:
        """Count one failed attempt of this session and retry its join (or leave) after the backoff."""
        backoff = self.client.backoff
        self._failures += 1
        if backoff.max_attempts is not None and self._failures >= backoff.max_attempts:
            self.end(SessionClosed(None, f"gave up after {self._failures} attempts: {why}", session=self.session))
            return
        delay = backoff.delay(self._failures - 1)
        log.debug("session %r: %s; again in %.2fs", self.session, why, delay)
        if self._rejoin is not None:
            self._rejoin.cancel()
        self._rejoin = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._rejoin = None
        if self.state is State.WAITING:
            self.state = State.JOINING
            if self.client.connected is not None:
                self.connection_up()
        elif self.state is State.LEAVING:
            self.client.send({"type": "leave", "session": self.session})

    def _forget(self, pending: Pending) -> None:
        if self._pending.get(pending.id) is pending:
            del self._pending[pending.id]
        self.client.untrack(pending.id)
