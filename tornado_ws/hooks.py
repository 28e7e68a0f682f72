"""Application hooks: how an embedding app decides who may join and what may be sent.

Every hook may be a plain or an ``async`` function. ``authorize`` and
``on_message`` decide; ``on_join`` and ``on_leave`` only observe, and an
exception in them is logged and never reaches the connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tornado_ws.auth import Claims

log = logging.getLogger("tornado_ws")

Authorize = Callable[[Claims, str], "bool | Awaitable[bool]"]
OnMessage = Callable[[Claims, str, Any], Any]
Observer = Callable[[Claims, str], Any]


class Reject(Exception):
    """Raise from ``on_message`` to refuse a message: the sender gets ``error`` with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Hooks:
    authorize: Authorize | None = None
    #: Returns the data to publish; ``None`` means "unchanged".
    on_message: OnMessage | None = None
    on_join: Observer | None = None
    on_leave: Observer | None = None


async def call(hook: Callable[..., Any], *args: Any) -> Any:
    """Call a plain or async hook and return its result."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def observe(hook: Observer | None, name: str, claims: Claims, session_id: str) -> None:
    """Run a bookkeeping hook; its failures are logged, never raised."""
    if hook is None:
        return
    try:
        await call(hook, claims, session_id)
    except Exception:
        log.exception("%s hook failed session=%s user=%s", name, session_id, claims.user_id)


_background: set[asyncio.Task[None]] = set()


def spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run a hook coroutine in the background, holding a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


#: Why a session is refused: the token's ``sessions`` claim, or the ``authorize`` hook.
NOT_IN_TOKEN = "session not allowed by token"
FORBIDDEN = "forbidden"


async def refusal(hooks: Hooks, claims: Claims, session_id: str) -> str | None:
    """Why ``claims`` may not use ``session_id``, or None when they may.

    The one rule of every path that reaches a session: a WebSocket join, a ``refresh``
    that replaces a connection's claims, and every session-scoped HTTP API route. An
    exception from the ``authorize`` hook propagates; the caller refuses and logs it.
    """
    if not session_allowed(claims, session_id):
        return NOT_IN_TOKEN
    if hooks.authorize is not None and not await call(hooks.authorize, claims, session_id):
        return FORBIDDEN
    return None


def session_allowed(claims: Claims, session_id: str) -> bool:
    """The ``sessions`` claim: shell-style patterns the holder may join (absent: any)."""
    if claims.sessions is None:
        return True
    return any(fnmatch.fnmatchcase(session_id, pattern) for pattern in claims.sessions)
