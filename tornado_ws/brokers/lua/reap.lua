-- KEYS presence. ARGV dead_node, user_prefix (redis_scripts.user_prefix of the session's org).
-- Removes the dead node's entries (and their user_connections fields) and any entry that does
-- not decode; returns {entries_left, gone_user_entries...} where a gone user had connections only
-- on the dead node. Atomic, so when several nodes reap the same dead node, only one of them
-- announces each departure.
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
