"""Presence state and signals, the ephemeral frames of a session, for both clients.

:class:`Presence` keeps this connection's state in one session. The server answers nothing to a
``presence`` frame that succeeds; every member, this connection included, gets the user's
``presence_state`` at its next flush (at most one per 50 ms, the latest state). That echo is the
confirmation :meth:`Presence.set` waits for, and a refusal (``error`` ``state_too_large`` or
``unavailable``, without an ``id``) is its failure. Neither names the frame it answers, so at most
one ``presence`` frame per session is on its way: a newer state waits for the answer to the last,
and replaces any state still waiting, as the server's own coalescing would. The server drops the
state with the membership, so the state kept here is sent again after every welcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from tornado_ws.client.base import Backoff, PresenceError, encode_frame

#: The longest signal ``key`` the server accepts.
MAX_SIGNAL_KEY = 64
#: Refusals of a ``presence`` frame: nothing changed on the server.
REFUSALS = frozenset({"state_too_large", "unavailable"})
#: Over ``--rate-limit`` the frame was dropped unanswered; so is a signal over its own budget, and
#: neither error says which it was: resending the state is harmless (it is idempotent), losing it is not.
RATE_LIMITED = "rate_limited"


def signal_wire(session: str | None, data: Any, key: str | None) -> bytes:
    """A ``signal`` frame (``session`` on ``/ws``); ``ValueError``/``TypeError`` for one that cannot be sent."""
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_SIGNAL_KEY):
        raise ValueError(f"a signal key is a string of 1-{MAX_SIGNAL_KEY} characters")
    frame: dict[str, Any] = {"type": "signal", "data": data}
    if session is not None:
        frame["session"] = session
    if key is not None:
        frame["key"] = key
    return encode_frame(frame)


@dataclasses.dataclass(eq=False)
class Update:
    """One presence state and the callers waiting for its answer."""

    #: As the server will echo it: decoded from ``wire`` (tuples are lists, keys strings).
    state: dict[str, Any]
    wire: bytes
    waiters: list[asyncio.Future[None]] = dataclasses.field(default_factory=list)


class Presence:
    """This connection's presence state in one session, kept across reconnects.

    The owning client calls :meth:`welcomed` after each welcome, :meth:`down` when the membership
    is gone, :meth:`echo` with every ``presence_state`` of the session, :meth:`error` with every
    ``error`` of it that carries no ``id``, and :meth:`end` when the stream ends.
    """

    def __init__(self, session: str, send: Callable[[bytes], bool], backoff: Backoff, *, multiplexed: bool) -> None:
        self.session = session
        self._send = send
        self._backoff = backoff
        self._multiplexed = multiplexed
        #: The latest state not refused: re-sent after every welcome.
        self._kept: Update | None = None
        #: The latest state the server announced as ours (what it keeps after a refusal).
        self._accepted: Update | None = None
        self._next: Update | None = None  # waiting for the answer to _flight
        self._flight: Update | None = None  # sent, not answered
        self._user: str | None = None
        self._live = False
        self._retry: asyncio.TimerHandle | None = None
        self._retries = 0

    @property
    def state(self) -> dict[str, Any] | None:
        """The state this connection has, or will have once (re)joined; ``None`` if never set."""
        return None if self._kept is None else json.loads(self._kept.wire)["state"]

    async def set(self, state: dict[str, Any], timeout: float | None) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"a presence state is a dict (a JSON object), not {type(state).__name__}")
        frame: dict[str, Any] = {"type": "presence", "state": state}
        if self._multiplexed:
            frame["session"] = self.session
        wire = encode_frame(frame)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._next is not None:
            settle(self._next, None)  # replaced before it was sent: the latest wins
        self._next = self._kept = Update(json.loads(wire)["state"], wire, [waiter])
        self._pump()
        await asyncio.wait_for(waiter, timeout)

    # -- driven by the client ---------------------------------------------------------

    def welcomed(self, user_id: str) -> None:
        """A new membership, without the state the old one had: send the kept state (again)."""
        self._user, self._live = user_id, True
        self._cancel_retry()
        flight, self._flight = self._flight, None
        if self._next is None:
            self._next = self._kept  # the one on its way (its callers still wait), or the confirmed one
        elif flight is not None:
            settle(flight, None)  # a newer state replaces it
        self._pump()

    def down(self) -> None:
        self._live = False
        self._cancel_retry()

    def echo(self, frame: dict[str, Any]) -> None:
        """A ``presence_state`` of the session: ours answers the state on its way."""
        flight, state = self._flight, frame.get("state")
        if flight is None or frame.get("user_id") != self._user or not isinstance(state, dict):
            return  # someone else's, or null: ours is not processed yet (a refusal would say so)
        # A different state is another connection of the same user, updated since: the user's state
        # is the newest connection's. Ours is set all the same; waiting would only time out.
        if state == flight.state:
            self._accepted = flight
        self._flight = None
        self._retries = 0
        self._cancel_retry()
        settle(flight, None)
        self._pump()

    def error(self, frame: dict[str, Any]) -> None:
        """An ``error`` of the session without ``id``: maybe the answer to the state on its way."""
        code = frame.get("code")
        if code == RATE_LIMITED:
            if self._flight is not None and self._live and self._retry is None:
                delay = self._backoff.delay(self._retries)
                self._retries += 1
                self._retry = asyncio.get_running_loop().call_later(delay, self._resend)
            return
        if code not in REFUSALS:
            return
        flight, self._flight = self._flight, None
        if self._next is None:
            self._kept = self._accepted  # the server keeps the state it had
        if flight is not None:
            settle(flight, PresenceError(str(code), str(frame.get("message", "")), session=self.session))
        self._pump()

    def end(self, closed: BaseException) -> None:
        """The stream ended: callers still waiting raise ``closed``."""
        self.down()
        for update in (self._flight, self._next):
            if update is not None:
                settle(update, closed)
        self._flight = self._next = None

    # -- inside ---------------------------------------------------------------------

    def _pump(self) -> None:
        if self._live and self._flight is None and self._next is not None and self._send(self._next.wire):
            self._flight, self._next = self._next, None

    def _resend(self) -> None:
        """The state on its way may have been dropped over the rate limit: send the latest again."""
        self._retry = None
        flight = self._flight
        if flight is None or not self._live:
            return
        if self._next is None:
            self._send(flight.wire)
            return
        self._flight = None
        settle(flight, None)  # a newer state replaces it
        self._pump()

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None


def settle(update: Update, error: BaseException | None) -> None:
    """Answer every caller still waiting for ``update`` (a timed-out one no longer waits)."""
    for waiter in update.waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
    update.waiters.clear()
