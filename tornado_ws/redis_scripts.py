"""Redis key layout and the Lua scripts that make each step atomic.

Keys of one session start with ``tws:<len(org)>:<org>:<session_id>``: the
length prefix keeps org ``a`` + session ``b:c`` apart from org ``a:b`` +
session ``c``.
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


# A stream whose epoch key is gone (expired, or Redis restarted empty) starts
# over: new epoch, seq from 1, no history. Resuming clients then see the epoch
# change and are told recovered:false instead of trusting a restarted counter.
_ENSURE_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
"""

#: KEYS epoch, seq, history, channel. ARGV new_epoch, history_size, ttl, frame_before_seq, frame_after_seq.
#: Sequence, keep and publish in one step, so every node sees one gapless order.
PUBLISH = (
    _ENSURE_EPOCH
    + """
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
redis.call('PUBLISH', KEYS[4], 'm' .. epoch .. ' ' .. seq .. ' ' .. frame)
return seq
"""
)

# The stream's state after ``since`` as {epoch, last_seq, recovered (0/1), frames after since}.
# KEYS[1..3] epoch, seq, history; ARGV[1..4] new_epoch, since (-1: none), ttl, client_epoch.
_SNAPSHOT = (
    _ENSURE_EPOCH
    + """
local function snapshot()
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
SNAPSHOT = _SNAPSHOT + "return snapshot()\n"

#: KEYS epoch, seq, history, presence, node_sessions. ARGV new_epoch, since, ttl, client_epoch (as
#: SNAPSHOT), connection_id, entry_json, user_id, session_json. A join in one round trip: the
#: presence entry, the stream snapshot and the node's session index.
#: Returns {first_of_user, entries, snapshot}.
JOIN = (
    _SNAPSHOT
    + """
local entries = redis.call('HVALS', KEYS[4])
local first = 1
for _, entry in ipairs(entries) do
  if cjson.decode(entry)['u'] == ARGV[7] then first = 0 break end
end
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
table.insert(entries, ARGV[6])
redis.call('SADD', KEYS[5], ARGV[8])
return {first, entries, snapshot()}
"""
)

#: KEYS presence, channel. ARGV connection_id, user_id, user_left frame before / after its count.
#: Removes the entry and, when it was the user's last, publishes ``user_left`` with the number
#: of users left, in the same step. Returns 1 if the entry was there.
LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local users, count, last = {}, 0, true
for _, entry in ipairs(redis.call('HVALS', KEYS[1])) do
  local user = cjson.decode(entry)['u']
  if user == ARGV[2] then last = false break end
  if not users[user] then users[user] = true count = count + 1 end
end
if last then
  redis.call('PUBLISH', KEYS[2], 'p- ' .. ARGV[3] .. count .. ARGV[4])
end
return 1
"""

#: KEYS presence. ARGV dead_node. Removes its entries; returns {entries_left, gone_user_entries...}
#: where a gone user had connections only on the dead node. Atomic, so when several
#: nodes reap the same dead node, only one of them announces each departure.
REAP = """
local all = redis.call('HGETALL', KEYS[1])
local removed, kept, left = {}, {}, {}
for i = 1, #all, 2 do
  local entry = cjson.decode(all[i + 1])
  if entry['n'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
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
