"""How a connection gets into a session: the one admission path of both WebSocket endpoints.

``/ws/<session_id>`` runs it once, in ``open()``, and closes the socket on a refusal;
``/ws`` runs it for every ``join`` frame and answers a refusal with a ``left`` frame. Either
way the same rules hold in the same order: a valid session id, the token's ``sessions`` claim
and the ``authorize`` hook, then the broker's atomic admission (bans, caps) and the join.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

from tornado_ws import hooks
from tornado_ws.auth import Claims
from tornado_ws.brokers.base import BrokerUnavailable, JoinRefused
from tornado_ws.core.protocol import valid_session_id
from tornado_ws.core.registry import Membership
from tornado_ws.errors import CloseCode
from tornado_ws.web.state import AppState

log = logging.getLogger("tornado_ws")


class Refusal(NamedTuple):
    """Why a join did not happen: the close code (or ``left`` code), its reason, a metric label."""

    code: int
    reason: str
    label: str

    @classmethod
    def of(cls, exc: JoinRefused) -> Refusal:
        """The broker's refusal (a cap or a ban) as a close code, reason and label."""
        return cls(exc.code, exc.reason, exc.label)


INVALID_SESSION_ID = Refusal(CloseCode.POLICY_VIOLATION, "invalid session id", "invalid_session_id")
UNAVAILABLE = Refusal(CloseCode.TRY_AGAIN_LATER, "unavailable; try again later", "unavailable")


def check(state: AppState, claims: Claims, session_id: str) -> Refusal | None:
    """What needs no hook: the session id and the token's ``sessions`` claim."""
    if not valid_session_id(session_id, state.config.max_session_id_length):
        return INVALID_SESSION_ID
    if not hooks.session_allowed(claims, session_id):
        return Refusal(CloseCode.FORBIDDEN, hooks.NOT_IN_TOKEN, "forbidden")
    return None


async def authorize(state: AppState, claims: Claims, session_id: str) -> Refusal | None:
    """The checks before any state changes: the session id, the ``sessions`` claim, the hook."""
    refusal = check(state, claims, session_id)
    if refusal is not None or state.hooks.authorize is None:
        return refusal
    try:
        refused = await hooks.refusal(state.hooks, claims, session_id)
    except Exception:
        log.exception("authorize hook failed session=%s user=%s", session_id, claims.user_id)
        return Refusal(CloseCode.INTERNAL_ERROR, "authorization failed", "authorize_error")
    if refused is not None:
        return Refusal(CloseCode.FORBIDDEN, refused, "forbidden")
    return None


def join_now(
    state: AppState, member: Membership, *, epoch: str | None, since: int | None
) -> Refusal | Literal[False] | None:
    """:func:`join` without a coroutine when the broker can (memory, once started): a refusal,
    None when joined, or False when the broker needs I/O (then call :func:`join`)."""
    if not state.broker_ready:
        return False
    try:
        recovery = state.broker.join_now(member, epoch=epoch, since=since)
    except JoinRefused as exc:
        return Refusal.of(exc)
    return False if recovery is None else None


async def join(state: AppState, member: Membership, *, epoch: str | None, since: int | None) -> Refusal | None:
    """The broker's admission and join of ``member`` (welcome and replay go to its peer)."""
    try:
        await state.ensure_started()
        await state.broker.join(member, epoch=epoch, since=since)
    except BrokerUnavailable as exc:
        log.warning("broker unavailable at join session=%s: %s", member.key.session_id, exc)
        return UNAVAILABLE
    except JoinRefused as exc:  # a cap or a ban, checked by the broker atomically with the join
        return Refusal.of(exc)
    return None
