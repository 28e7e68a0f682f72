"""The server's messages: :class:`OutFrame` and the builders of every frame the hub sends. No I/O.

Each builder returns the frame framed once (an unmasked RFC 6455 text frame), so a broadcast to
N members hands the same bytes to all of them. Parts of frames are spliced rather than re-encoded
where a value was encoded on the way in (a message's ``data``, a presence ``state``).
"""

from __future__ import annotations

import json
from typing import Any, Final

from tornado_ws.core import frames

#: Built once: json.dumps with options constructs a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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


def presence_state_frame_parts(*, session_id: str, user_id: str) -> tuple[str, str]:
    """The text of a ``presence_state`` frame before and after its state (a script splices it in)."""
    text = presence_state_frame(session_id=session_id, user_id=user_id, state_json="null").text
    return text[: -len("null}")], "}"


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
