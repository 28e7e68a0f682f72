-- KEYS presence, channel, user_connections. ARGV connection_id, user_id, user_left frame before /
-- after its count, release ('1': the connection leaves the user's count too; '0': a /ws
-- membership, whose connection stays). Removes the entry and, when it was the user's last,
-- publishes ``user_left`` with the number of users left, in the same step. Returns 1 if the
-- entry was there.
if ARGV[5] == '1' then redis.call('HDEL', KEYS[3], ARGV[1]) end
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
