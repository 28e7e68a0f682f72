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

from .hub import SessionKey


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    epoch: str
    seq: str
    history: str
    presence: str
    channel: str

    @classmethod
    def of(cls, key: SessionKey) -> SessionKeys:
        base = f"tws:{len(key.org_id)}:{key.org_id}:{key.session_id}"
        return cls(f"{base}:e", f"{base}:q", f"{base}:h", f"{base}:p", f"{base}:c")


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


# Shared Lua helpers.
_HELPERS = """
-- A presence entry, or nil for one that is not ours: we write ASCII JSON (json.dumps), so a byte
-- above 127 is garbage too (cjson would pass invalid UTF-8 on, which Python then skips).
local function decode(raw)
  if string.find(raw, '[\\128-\\255]') then return nil end
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' and type(entry['u']) == 'string' and type(entry['n']) == 'string'
      and (entry['m'] == nil or type(entry['m']) == 'string') then
    return entry
  end
  return nil
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- False when session ``sid`` would be new in the org's set and the org already has ``max`` unexpired ones.
local function room(org_key, sid, max, at)
  if max <= 0 then return true end
  local score = redis.call('ZSCORE', org_key, sid)
  if score and tonumber(score) > at then return true end
  redis.call('ZREMRANGEBYSCORE', org_key, '-inf', at)
  return redis.call('ZCARD', org_key) < max
end
"""

# A stream whose epoch key is gone (expired, or Redis restarted empty) starts
# over: new epoch, seq from 1, no history. Resuming clients then see the epoch
# change and are told recovered:false instead of trusting a restarted counter.
# KEYS[1..3] epoch, seq, history; ARGV[1] new_epoch.
_ENSURE_EPOCH = """
local function ensure_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch)
    redis.call('DEL', KEYS[2], KEYS[3])
  end
  return epoch
end
"""

#: KEYS epoch, seq, history, channel, org_sessions. ARGV new_epoch, history_size, ttl, frame_before_seq,
#: frame_after_seq, session_id, max_sessions (0: no cap check). Sequence, keep and publish in one step,
#: so every node sees one gapless order. Returns the seq, or -1 (nothing done) when the session would
#: be new and its org is at max_sessions.
PUBLISH = (
    _HELPERS
    + _ENSURE_EPOCH
    + """
local at = now()
if not room(KEYS[5], ARGV[6], tonumber(ARGV[7]), at) then
  return -1
end
local epoch = ensure_epoch()
local seq = redis.call('INCR', KEYS[2])
local frame = ARGV[4] .. seq .. ARGV[5]
local size = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[3], frame)
  redis.call('LTRIM', KEYS[3], -size, -1)
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[5], at + ttl, ARGV[6])
redis.call('EXPIRE', KEYS[5], ttl + 1)  -- an org gone quiet leaves nothing behind
redis.call('PUBLISH', KEYS[4], 'm' .. epoch .. ' ' .. seq .. ' ' .. frame)
return seq
"""
)

# The stream's state after ``since`` as {epoch, last_seq, recovered (0/1), frames after since}.
# KEYS[1..3] epoch, seq, history; ARGV[1..4] new_epoch, since (-1: none), ttl, client_epoch.
_SNAPSHOT = (
    _ENSURE_EPOCH
    + """
local function snapshot(epoch)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local since = tonumber(ARGV[2])
  if ARGV[4] ~= epoch or since < 0 or since > last then
    return {epoch, last, 0, {}}
  end
  if since == last then
    return {epoch, last, 1, {}}
  end
  local len = redis.call('LLEN', KEYS[3])
  local first = last - len + 1
  if len == 0 or first > since + 1 then
    return {epoch, last, 0, {}}
  end
  return {epoch, last, 1, redis.call('LRANGE', KEYS[3], since + 1 - first, -1)}
end
"""
)

#: KEYS epoch, seq, history. ARGV new_epoch, since (-1: none), ttl, client_epoch.
#: Returns {epoch, last_seq, recovered (0/1), frames after since}.
SNAPSHOT = _SNAPSHOT + "return snapshot(ensure_epoch())\n"

#: KEYS epoch, seq, history, presence, node_sessions, org_sessions, user_connections, ban.
#: ARGV new_epoch, since, ttl, client_epoch (as SNAPSHOT), connection_id, entry_json, user_id,
#: session_json, node_id, session_id, max_connections_per_user, max_sessions_per_org.
#: Admission and join in one round trip: the ban, the user's connections on live nodes, the
#: org's live sessions; then the presence entry, the stream snapshot and the node's session index.
#: Returns {refusal} ('banned', 'user' or 'sessions': nothing was changed), else
#: {first_of_user, entries, snapshot}.
JOIN = (
    _HELPERS
    + _SNAPSHOT
    + """
if redis.call('EXISTS', KEYS[8]) == 1 then
  return {'banned'}
end
local conns = redis.call('HGETALL', KEYS[7])
local open = 0
for i = 1, #conns, 2 do
  local node = conns[i + 1]
  -- A crashed node's connections are gone; its key name is redis_scripts.node_alive().
  if node == ARGV[9] or redis.call('EXISTS', 'tws:node:' .. node .. ':alive') == 1 then
    open = open + 1
  else
    redis.call('HDEL', KEYS[7], conns[i])
  end
end
if open >= tonumber(ARGV[11]) then
  return {'user'}
end
local at = now()
if not room(KEYS[6], ARGV[10], tonumber(ARGV[12]), at) then
  return {'sessions'}
end
redis.call('ZADD', KEYS[6], at + tonumber(ARGV[3]), ARGV[10])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[3]) + 1)
redis.call('HSET', KEYS[7], ARGV[5], ARGV[9])
local all = redis.call('HGETALL', KEYS[4])
local entries, first = {}, 1
for i = 1, #all, 2 do
  local entry = decode(all[i + 1])
  if entry == nil then
    redis.call('HDEL', KEYS[4], all[i])
  else
    if entry['u'] == ARGV[7] then first = 0 end
    table.insert(entries, all[i + 1])
  end
end
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
table.insert(entries, ARGV[6])
redis.call('SADD', KEYS[5], ARGV[8])
return {first, entries, snapshot(ensure_epoch())}
"""
)

#: KEYS presence, channel, user_connections. ARGV connection_id, user_id, user_left frame before /
#: after its count. Removes the entry and, when it was the user's last, publishes ``user_left``
#: with the number of users left, in the same step. Returns 1 if the entry was there.
LEAVE = (
    _HELPERS
    + """
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local users, count, last = {}, 0, true
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local entry = decode(raw)
  if entry ~= nil then
    local user = entry['u']
    if user == ARGV[2] then last = false break end
    if not users[user] then users[user] = true count = count + 1 end
  end
end
if last then
  redis.call('PUBLISH', KEYS[2], 'p- ' .. ARGV[3] .. count .. ARGV[4])
end
return 1
"""
)

#: KEYS presence. ARGV dead_node, user_prefix (redis_scripts.user_prefix of the session's org).
#: Removes the dead node's entries (and their user_connections fields) and any entry that does
#: not decode; returns {entries_left, gone_user_entries...} where a gone user had connections only
#: on the dead node. Atomic, so when several nodes reap the same dead node, only one of them
#: announces each departure.
REAP = (
    _HELPERS
    + """
local all = redis.call('HGETALL', KEYS[1])
local removed, kept, left = {}, {}, {}
for i = 1, #all, 2 do
  local entry = decode(all[i + 1])
  if entry == nil then
    redis.call('HDEL', KEYS[1], all[i])
  elseif entry['n'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HDEL', ARGV[2] .. #entry['u'] .. ':' .. entry['u'], all[i])
    removed[entry['u']] = all[i + 1]
  else
    kept[entry['u']] = true
    table.insert(left, all[i + 1])
  end
end
local gone = {}
for user, entry in pairs(removed) do
  if not kept[user] then table.insert(gone, entry) end
end
return {left, gone}
"""
)

#: KEYS org_sessions (one per session). ARGV ttl, session_id (one per key). The heartbeat keeps
#: sessions with members on this node counted for another ttl.
KEEP = (
    _HELPERS
    + """
local ttl = tonumber(ARGV[1])
local expiry = now() + ttl
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 1])
  redis.call('EXPIRE', key, ttl + 1)
end
return #KEYS
"""
)
