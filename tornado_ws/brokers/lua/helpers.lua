-- Shared helpers: decode a presence entry, the server clock, the org session cap, the user's
-- connection cap.
-- A presence entry, or nil for one that is not ours: we write ASCII JSON (json.dumps), so a byte
-- above 127 is garbage too (cjson would pass invalid UTF-8 on, which Python then skips).
local function decode(raw)
  if string.find(raw, '[\128-\255]') then return nil end
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
-- False when the user (hash ``user_key``: connection id -> node) has ``max`` connections on live
-- nodes; a crashed node's entries are dropped first (its key name is redis_scripts.node_alive()).
local function user_room(user_key, node_id, max)
  local conns = redis.call('HGETALL', user_key)
  local open = 0
  for i = 1, #conns, 2 do
    local node = conns[i + 1]
    if node == node_id or redis.call('EXISTS', 'tws:node:' .. node .. ':alive') == 1 then
      open = open + 1
    else
      redis.call('HDEL', user_key, conns[i])
    end
  end
  return open < max
end
-- The session's next presence version: every presence change (join, leave, state, reap) takes
-- one, so a node can tell which announcements a welcome already shows.
local function presence_version(key, ttl)
  local version = redis.call('INCR', key)
  redis.call('EXPIRE', key, ttl)
  return version
end
