"""The JSON protocol's client side: validate and parse what clients send. No I/O.

Words: a *message* is one JSON object of the protocol (what docs/protocol.md calls a frame of
type ``welcome``, ``message``, ...); a *frame* is the RFC 6455 frame that carries it
(:mod:`tornado_ws.core.frames`). Client messages are JSON objects with a ``type``; anything
else raises :class:`MessageError`, which the adapter turns into an ``error`` message for the
sender only. What the server sends is built in :mod:`tornado_ws.core.server_messages`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Final, NoReturn

from tornado_ws.errors import ErrorCode

MAX_SESSION_ID_LENGTH: Final = 128
_SESSION_ID = re.compile(r"[A-Za-z0-9._~:\-]+")
#: A message id (and the HTTP API's ``idempotency_key``): 1-64 characters of ``[A-Za-z0-9._:-]``.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def valid_session_id(session_id: str, max_length: int = MAX_SESSION_ID_LENGTH) -> bool:
    """Session ids are opaque: 1 to ``max_length`` (default 128) chars of ``[A-Za-z0-9._~:-]``."""
    return len(session_id) <= max_length and _SESSION_ID.fullmatch(session_id) is not None


def valid_message_id(value: object) -> bool:
    """A message's ``id`` (or an ``idempotency_key``): a string of 1-64 chars of ``[A-Za-z0-9._:-]``."""
    return isinstance(value, str) and _MESSAGE_ID.fullmatch(value) is not None


class MessageError(ValueError):
    """A client message (or payload) was refused; ``code``, ``message`` and the message's ``id``
    (when it had a valid one) go into an ``error``."""

    def __init__(
        self, code: ErrorCode, message: str, message_id: str | None = None, session_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_id = message_id
        #: The session the refused frame named (``/ws``), when it named one we can repeat.
        self.session_id = session_id


@dataclasses.dataclass(frozen=True)
class Publish:
    """``{"type": "message", "data": ..., "id": ..., "session": ...}``; ``data_json`` is the
    re-encoded data, ``id`` the sender's message id (None: no ack, no duplicate detection),
    ``session`` the session it names (on ``/ws``; None when it names none)."""

    data_json: str
    id: str | None = None
    session: str | None = None


@dataclasses.dataclass(frozen=True)
class Join:
    """``{"type": "join", "session": ..., "since": N, "epoch": ...}`` (``/ws``): join a session,
    resuming after ``since`` of ``epoch`` when both are given. ``since`` is None unless it is a
    non-negative integer of at most 18 digits (the rule of the ``?since=`` query argument)."""

    session: str
    since: int | None = None
    epoch: str | None = None


@dataclasses.dataclass(frozen=True)
class Leave:
    """``{"type": "leave", "session": ...}`` (``/ws``)."""

    session: str


@dataclasses.dataclass(frozen=True)
class Ping:
    """``{"type": "ping"}``."""


@dataclasses.dataclass(frozen=True)
class Refresh:
    """``{"type": "refresh", "token": "<jwt>"}``: extend the connection's life."""

    token: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class SetPresence:
    """``{"type": "presence", "state": {...}, "session": ...}``: this connection's presence state
    in the session; ``state_json`` is its canonical encoding (what the size limit measures)."""

    state: Any = dataclasses.field(repr=False)
    state_json: str = dataclasses.field(repr=False)
    session: str | None = None


@dataclasses.dataclass(frozen=True)
class Signal:
    """``{"type": "signal", "data": ..., "key": ..., "session": ...}``: an ephemeral frame for the
    session's other connections; a newer one with the same ``key`` replaces an unsent older one."""

    data_json: str
    key: str | None = None
    session: str | None = None


ClientMessage = Publish | Ping | Refresh | Join | Leave | SetPresence | Signal
#: Longest signal ``key``.
MAX_SIGNAL_KEY = 64
#: The largest ``since`` a client may send: Redis's 64-bit counter never gets there.
MAX_SINCE = 10**18 - 1


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins ({"org":"victim","org":"acme"} must not mean
        # one org to an issuer and another to us); refusing is the only safe reading.
        raise ValueError("duplicate key in object")
    return obj


#: Strict JSON (no duplicate keys, no NaN/Infinity) for messages and token segments alike.
#: Built once: json.loads with options builds a decoder on every call.
STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def parse_json(text: str) -> Any:
    """Strict JSON: MessageError(bad_json) for anything we would refuse to forward."""
    try:
        return STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise MessageError(ErrorCode.BAD_JSON, f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise MessageError(ErrorCode.BAD_JSON, "invalid JSON: nested too deeply") from None
    except ValueError as exc:
        # Covers NaN/Infinity, duplicate keys and integers over Python's digit limit.
        raise MessageError(ErrorCode.BAD_JSON, f"invalid JSON: {str(exc)[:80]}") from None


#: Built once: json.dumps with options constructs a new encoder on every call.
_COMPACT_STRICT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_data(data: Any) -> str:
    """Canonical compact JSON of a payload; raises MessageError for what UTF-8 cannot carry."""
    try:
        text = _COMPACT_STRICT.encode(data)
        text.encode("utf-8")
    except RecursionError:
        raise MessageError(ErrorCode.BAD_JSON, "invalid JSON: nested too deeply") from None
    except UnicodeEncodeError:
        raise MessageError(ErrorCode.BAD_JSON, "invalid JSON: lone surrogate in string") from None
    except (TypeError, ValueError) as exc:
        raise MessageError(ErrorCode.BAD_JSON, f"invalid JSON: {str(exc)[:80]}") from None
    return text


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one client message or raise :class:`MessageError`."""
    if isinstance(raw, bytes):
        raise MessageError(ErrorCode.BINARY_NOT_SUPPORTED, "binary frames are not supported; send JSON text")
    obj = parse_json(raw)
    if not isinstance(obj, dict):
        raise MessageError(ErrorCode.BAD_FRAME, "a frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError(ErrorCode.BAD_FRAME, 'a frame needs a string "type"')
    if kind == "message":
        if "id" in obj or "session" in obj:  # one dict lookup is all a plain message pays
            return _publish_with_id(obj)
        if "data" not in obj:
            raise MessageError(ErrorCode.BAD_FRAME, 'a "message" frame needs "data"')
        return Publish(encode_data(obj["data"]))
    if kind == "ping":
        return Ping()
    if kind == "refresh":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise MessageError(ErrorCode.BAD_FRAME, 'a "refresh" frame needs a string "token"')
        return Refresh(token)
    if kind == "signal":
        return _signal(obj)
    if kind == "presence":
        return _presence(obj)
    if kind == "join":
        return _join(obj)
    if kind == "leave":
        return Leave(_session_of(obj))
    # The type is not echoed: error frames never repeat client input.
    raise MessageError(
        ErrorCode.UNKNOWN_TYPE,
        'unknown frame type; expected "message", "signal", "presence", "join", "leave", "ping" or "refresh"',
    )


def _session_of(obj: dict[str, Any]) -> str:
    """The ``session`` a frame names: any string a frame can repeat (an invalid session id is the
    join's refusal to make, in a ``left`` frame that names it)."""
    session = obj.get("session")
    if not isinstance(session, str):
        raise MessageError(ErrorCode.BAD_FRAME, 'this frame needs a string "session"')
    try:
        session.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(ErrorCode.BAD_FRAME, 'a "session" with a lone surrogate is no session id') from None
    return session


def _signal(obj: dict[str, Any]) -> Signal:
    session = _session_of(obj) if "session" in obj else None
    key = obj.get("key")
    if key is not None:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_SIGNAL_KEY:
            raise MessageError(ErrorCode.BAD_FRAME, 'a signal "key" is a string of 1-64 characters', None, session)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(ErrorCode.BAD_JSON, "invalid JSON: lone surrogate in string", None, session) from None
    if "data" not in obj:
        raise MessageError(ErrorCode.BAD_FRAME, 'a "signal" frame needs "data"', None, session)
    try:
        return Signal(encode_data(obj["data"]), key, session)
    except MessageError as exc:
        raise MessageError(exc.code, exc.message, None, session) from None


def _presence(obj: dict[str, Any]) -> SetPresence:
    session = _session_of(obj) if "session" in obj else None
    state = obj.get("state")
    if not isinstance(state, dict):
        raise MessageError(ErrorCode.BAD_FRAME, 'a "presence" frame needs a JSON object "state"', None, session)
    try:
        return SetPresence(state, encode_data(state), session)
    except MessageError as exc:
        raise MessageError(exc.code, exc.message, None, session) from None


def _join(obj: dict[str, Any]) -> Join:
    session = _session_of(obj)
    since, epoch = obj.get("since"), obj.get("epoch")
    # As the query arguments: a resume point that is not one is ignored, and the join starts fresh.
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SINCE:
        since = None
    return Join(session, since, epoch if isinstance(epoch, str) else None)


def _publish_with_id(obj: dict[str, Any]) -> Publish:
    """A ``message`` with an ``id`` or a ``session``: its errors name them (when they are valid)."""
    session = _session_of(obj) if "session" in obj else None
    message_id = obj.get("id")
    if "id" in obj and not valid_message_id(message_id):
        # Not echoed in the error: an id we refuse is client input we do not repeat.
        raise MessageError(ErrorCode.BAD_FRAME, 'a message "id" is 1-64 characters of [A-Za-z0-9._:-]', None, session)
    if "data" not in obj:
        raise MessageError(ErrorCode.BAD_FRAME, 'a "message" frame needs "data"', message_id, session)
    try:
        return Publish(encode_data(obj["data"]), message_id, session)
    except MessageError as exc:
        raise MessageError(exc.code, exc.message, message_id, session) from None


def message_id_of(raw: str | bytes) -> str | None:
    """The valid ``id`` of a ``message`` frame, or None: for an error about a frame not parsed yet
    (``rate_limited``). A frame without the text ``"id"`` costs one substring search."""
    if not isinstance(raw, str) or '"id"' not in raw:
        return None
    try:
        obj = parse_json(raw)
    except MessageError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "message":
        return None
    message_id = obj.get("id")
    return message_id if valid_message_id(message_id) else None
