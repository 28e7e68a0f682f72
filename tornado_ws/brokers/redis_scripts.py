"""Redis key layout and the Lua scripts that make each step atomic.

Keys of one session start with ``tws:<len(org)>:<org>:<session_id>``: the
length prefix keeps org ``a`` + session ``b:c`` apart from org ``a:b`` +
session ``c``. Every other key names its parts the same way: each part but the
last is length-prefixed, so no two (org, session, user) can share a key. In the
per-user key the user's length counts UTF-8 bytes, because Lua (REAP) builds it.

A presence entry that does not decode (cjson) is skipped by every script and
removed by JOIN and REAP: one bad entry must never make a session refuse joins.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

from tornado_ws.core.registry import SessionKey


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    epoch: str
    seq: str
    history: str
    presence: str
    channel: str
    #: Hash: user id -> its connections in the session (who is first, how many, in O(1)).
    users: str
    #: Counter: the session's presence version, one per presence change (helpers.lua).
    presence_version: str

    @classmethod
    def of(cls, key: SessionKey) -> SessionKeys:
        base = f"tws:{len(key.org_id)}:{key.org_id}:{key.session_id}"
        return cls(f"{base}:e", f"{base}:q", f"{base}:h", f"{base}:p", f"{base}:c", f"{base}:u", f"{base}:v")


NODES = "tws:nodes"


def node_alive(node: str) -> str:
    return f"tws:node:{node}:alive"


def node_sessions(node: str) -> str:
    return f"tws:node:{node}:sessions"


def node_control(node: str) -> str:
    return f"tws:node:{node}:ctl"


def org_sessions(org_id: str) -> str:
    """Sorted set: the org's session ids, scored by when they expire (--max-sessions-per-org)."""
    return f"tws:org:{len(org_id)}:{org_id}:sessions"


def user_prefix(org_id: str) -> str:
    return f"tws:user:{len(org_id)}:{org_id}:"


def user_connections(org_id: str, user_id: str) -> str:
    """Hash: the user's connection ids (in every session) -> node id (--max-connections-per-user)."""
    return f"{user_prefix(org_id)}{len(user_id.encode())}:{user_id}"


def ban(key: SessionKey, user_id: str) -> str:
    """String with a TTL: while it exists, ``user_id`` may not join ``key``."""
    return f"tws:ban:{len(key.org_id)}:{key.org_id}:{len(key.session_id)}:{key.session_id}:{user_id}"


def message_id(key: SessionKey, user_id: str, message_id: str) -> str:
    """String with a TTL (the idempotency window): the seq ``user_id``'s message ``message_id`` got."""
    org, sid = key
    return f"tws:id:{len(org)}:{org}:{len(sid)}:{sid}:{len(user_id)}:{user_id}:{message_id}"


def _lua(*names: str) -> str:
    """One script from its fragments in ``lua/`` (package data), joined in order."""
    folder = resources.files("tornado_ws.brokers") / "lua"
    return "".join((folder / f"{name}.lua").read_text(encoding="utf-8") for name in names)


#: Each script's KEYS, ARGV and answer are described at the top of its own file in ``lua/``.
PUBLISH = _lua("helpers", "ensure_epoch", "publish")
SNAPSHOT = _lua("ensure_epoch", "snapshot_function", "snapshot")
JOIN = _lua("helpers", "ensure_epoch", "snapshot_function", "join")
LEAVE = _lua("helpers", "leave")
ADMIT = _lua("helpers", "admit")
STATE = _lua("helpers", "state")
REAP = _lua("helpers", "reap")
KEEP = _lua("helpers", "keep")
