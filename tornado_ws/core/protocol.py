"""The JSON protocol: parse client messages, build server messages. No I/O.

Words: a *message* is one JSON object of the protocol (what docs/protocol.md calls a frame of
type ``welcome``, ``message``, ...); a *frame* is the RFC 6455 frame that carries it
(:mod:`tornado_ws.core.frames`). Client messages are JSON objects with a ``type``; anything
else raises :class:`MessageError`, which the adapter turns into an ``error`` message for the
sender only. Server messages are built as text once and wrapped in :class:`OutFrame`, the
unmasked RFC 6455 frame that carries them, so a broadcast to N members frames the payload
once, not N times (hence the builders' names: ``welcome_frame`` returns that frame).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Final, NoReturn

from tornado_ws.core import frames
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
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
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


class OutFrame:
    """A server frame: its JSON text and its wire bytes, the unmasked RFC 6455 text frame.

    Framed once when built: a broadcast hands the same bytes to every member.
    """

    __slots__ = ("text", "wire")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wire = frames.encode(frames.TEXT, text.encode("utf-8"))

    def __repr__(self) -> str:
        return f"OutFrame({self.text!r})"


def _dumps(obj: dict[str, Any]) -> OutFrame:
    return OutFrame(_COMPACT.encode(obj))


def participant(user_id: str, name: str | None, state: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"user_id": user_id}
    if name is not None:
        entry["name"] = name
    if state is not None:
        entry["state"] = state
    return entry


def welcome_frame(
    *,
    session_id: str,
    user_id: str,
    org_id: str,
    connection_id: str,
    participants: list[dict[str, Any]] | str,
    seq: int,
    epoch: str,
    recovered: bool,
    participant_count: int | None = None,
) -> OutFrame:
    """``welcome``. ``participants`` may be the JSON text of the list, encoded once for many
    welcomes (a big session's roster); with ``participant_count`` over its length, the welcome
    says ``participants_truncated``."""
    listed = participants if isinstance(participants, str) else _COMPACT.encode(participants)
    count = participant_count if participant_count is not None else len(participants)
    head = _COMPACT.encode(
        {
            "type": "welcome",
            "session_id": session_id,
            "user_id": user_id,
            "org_id": org_id,
            "connection_id": connection_id,
        }
    )
    tail = _COMPACT.encode({"participant_count": count, "seq": seq, "epoch": epoch, "recovered": recovered})
    truncated = ',"participants_truncated":true' if participant_count is not None else ""
    return OutFrame(f'{head[:-1]},"participants":{listed}{truncated},{tail[1:]}')


def presence_frame(kind: str, *, session_id: str, user_id: str, name: str | None, count: int) -> OutFrame:
    """``user_joined`` or ``user_left``."""
    frame: dict[str, Any] = {"type": kind, "session_id": session_id, "user_id": user_id}
    if name is not None:
        frame["name"] = name
    frame["participant_count"] = count
    return _dumps(frame)


def presence_frame_parts(kind: str, *, session_id: str, user_id: str, name: str | None) -> tuple[str, str]:
    """The text of a presence frame before and after its count (a broker may splice the count in)."""
    text = presence_frame(kind, session_id=session_id, user_id=user_id, name=name, count=0).text
    return text[: -len("0}")], "}"


def message_frame_parts(
    *, session_id: str, user_id: str, name: str | None, ts: float, data_json: str, message_id: str | None = None
) -> tuple[str, str]:
    """The text of a ``message`` frame before and after its seq (a broker may splice the seq in).

    Fields in this order: type, session_id, user_id, name?, seq, ts, id?, data."""
    # Spliced rather than re-dumped: data_json was validated and encoded once on the way in.
    head = {"type": "message", "session_id": session_id, "user_id": user_id}
    if name is not None:
        head["name"] = name
    prefix = _COMPACT.encode(head)[:-1]
    # A valid id is plain ASCII with nothing JSON escapes: quoting it is its encoding.
    id_field = "" if message_id is None else f',"id":"{message_id}"'
    return f'{prefix},"seq":', f',"ts":{ts!r}{id_field},"data":{data_json}}}'


def message_frame(
    *,
    session_id: str,
    user_id: str,
    name: str | None,
    seq: int,
    ts: float,
    data_json: str,
    message_id: str | None = None,
) -> OutFrame:
    before, after = message_frame_parts(
        session_id=session_id, user_id=user_id, name=name, ts=ts, data_json=data_json, message_id=message_id
    )
    return OutFrame(f"{before}{seq}{after}")


def presence_state_frame(*, session_id: str, user_id: str, state_json: str) -> OutFrame:
    """``presence_state``: ``user_id``'s state in ``session_id`` is now the JSON object
    ``state_json`` (``null``: it has none any more). Spliced: the state was encoded on the way in."""
    head = _COMPACT.encode({"type": "presence_state", "session_id": session_id, "user_id": user_id})
    return OutFrame(f'{head[:-1]},"state":{state_json}}}')


def presence_summary_frame(*, session_id: str, count: int, joined: list[str], left: list[str]) -> OutFrame:
    """``presence_summary``: a big session's joins and leaves since the last one, newest first."""
    return _dumps(
        {
            "type": "presence_summary",
            "session_id": session_id,
            "participant_count": count,
            "joined": joined,
            "left": left,
        }
    )


def signal_frame(*, session_id: str, user_id: str, name: str | None, data_json: str, key: str | None) -> OutFrame:
    """``signal`` as the session's other connections get it: no seq, never stored."""
    head: dict[str, Any] = {"type": "signal", "session_id": session_id, "user_id": user_id}
    if name is not None:
        head["name"] = name
    if key is not None:
        head["key"] = key
    return OutFrame(f'{_COMPACT.encode(head)[:-1]},"data":{data_json}}}')


def ack_frame(*, session_id: str, message_id: str, seq: int, duplicate: bool) -> OutFrame:
    """``ack``: the message ``message_id`` has ``seq``; ``duplicate`` when it was published before."""
    frame: dict[str, Any] = {"type": "ack", "session_id": session_id, "id": message_id, "seq": seq}
    if duplicate:
        frame["duplicate"] = True
    return _dumps(frame)


def error_frame(code: str, message: str, message_id: str | None = None, session_id: str | None = None) -> OutFrame:
    """``error``; with the ``id`` of the message it refuses, when that message had one, and the
    ``session_id`` it is about, when it is about one session of a ``/ws`` connection."""
    frame: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if session_id is not None:
        frame["session_id"] = session_id
    if message_id is not None:
        frame["id"] = message_id
    return _dumps(frame)


def connected_frame(*, user_id: str, org_id: str, connection_id: str, expires_at: float | None) -> OutFrame:
    """``connected``: the first frame of a ``/ws`` connection, which is in no session yet."""
    return _dumps(
        {
            "type": "connected",
            "user_id": user_id,
            "org_id": org_id,
            "connection_id": connection_id,
            "expires_at": expires_at,
        }
    )


def left_frame(*, session_id: str, code: int, reason: str) -> OutFrame:
    """``left``: this connection is no longer in ``session_id`` (``code`` as a close code would say why)."""
    return _dumps({"type": "left", "session_id": session_id, "code": code, "reason": reason})


def refreshed_frame(expires_at: float | None) -> OutFrame:
    return _dumps({"type": "refreshed", "expires_at": expires_at})


PONG: Final = OutFrame('{"type":"pong"}')
