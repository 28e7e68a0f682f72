"""Close codes and error codes: the one table clients may rely on.

Close codes follow RFC 6455 where a standard code fits, and use the private
4000-4999 range for tornado-ws specific reasons.  A client decides from the
code alone whether reconnecting can help (see :func:`should_reconnect`).
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """WebSocket close codes sent by the server."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect elsewhere
    PROTOCOL_ERROR = 1002  # a frame broke RFC 6455 (unmasked, reserved bits, bad opcode...)
    INVALID_DATA = 1007  # a text frame (or close reason) that is not UTF-8
    POLICY_VIOLATION = 1008  # bad token, bad session id: do not retry as-is
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the session stream restarted (broker lost state): reconnect, reload
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4001  # get a fresh token, then reconnect
    KICKED = 4003  # removed by an operator: do not come back
    FORBIDDEN = 4004  # not allowed in this session: do not come back
    SLOW_CONSUMER = 4008  # fell too far behind: reconnect and resume


#: Codes after which reconnecting with the same credentials cannot succeed.
TERMINAL_CLOSE_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.KICKED,
        CloseCode.FORBIDDEN,
    }
)


def should_reconnect(code: int | None) -> bool:
    """Whether a client that saw ``code`` may usefully reconnect."""
    return code not in TERMINAL_CLOSE_CODES


class ErrorCode(enum.StrEnum):
    """Stable ``code`` strings of ``error`` frames."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    BAD_REFRESH = "bad_refresh"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    ALREADY_JOINED = "already_joined"  # /ws: a join of a session this connection is in
    NOT_JOINED = "not_joined"  # /ws: a message or leave for a session this connection is not in
    STATE_TOO_LARGE = "state_too_large"  # a presence state over --max-presence-state-size
