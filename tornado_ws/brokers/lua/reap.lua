-- KEYS presence, users, presence_version. ARGV dead_node, user_prefix (redis_scripts.user_prefix of
-- the session's org), ttl.
-- Removes the dead node's entries (and their user_connections fields, and their count in the
-- session's users hash) and any entry that does not decode; returns {participant_count,
-- presence_version, gone_user_entries...} where a gone user had connections only on the dead node. Atomic, so when
-- several nodes reap the same dead node, only one of them announces each departure.
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #all, 2 do
  local entry = decode(all[i + 1])
  if entry == nil then
    redis.call('HDEL', KEYS[1], all[i])
  elseif entry['n'] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HDEL', ARGV[2] .. #entry['u'] .. ':' .. entry['u'], all[i])
    if redis.call('HINCRBY', KEYS[2], entry['u'], -1) <= 0 then
      redis.call('HDEL', KEYS[2], entry['u'])
      table.insert(gone, all[i + 1])
    end
  end
end
return {redis.call('HLEN', KEYS[2]), presence_version(KEYS[3], tonumber(ARGV[3])), gone}
