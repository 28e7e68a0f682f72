-- KEYS org_sessions (one per session). ARGV ttl, session_id (one per key). The heartbeat keeps
-- sessions with members on this node counted for another ttl.
local ttl = tonumber(ARGV[1])
local expiry = now() + ttl
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 1])
  redis.call('EXPIRE', key, ttl + 1)
end
return #KEYS
