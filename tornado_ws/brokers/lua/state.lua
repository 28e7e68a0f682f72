-- KEYS presence, channel, presence_version. ARGV connection_id, entry before its tick, entry after
-- it, the presence_state frame, ttl. Stamps the connection's presence entry (which now holds its state) with
-- Redis's clock, so the most recent update of a user wins on every node, and publishes the
-- frame ('s'). Returns 0 (and does nothing) when the connection is not in the session.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local tick = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. string.format('%d', tick) .. ARGV[3])
redis.call('PUBLISH', KEYS[2], 's' .. presence_version(KEYS[3], tonumber(ARGV[5])) .. ' ' .. ARGV[4])
return 1
