-- KEYS presence, channel, user_connections. ARGV connection_id, user_id, user_left frame before /
-- after its count, release ('1': the connection leaves the user's count too; '0': a /ws
-- membership, whose connection stays), presence_state frame before / after its state.
-- Removes the entry and, in the same step: when it was the user's last, publishes ``user_left``
-- with the number of users left; when the user stays but this entry held its newest state,
-- publishes ``presence_state`` with the state of the user's newest remaining entry (or null).
-- Returns 1 if the entry was there.
if ARGV[5] == '1' then redis.call('HDEL', KEYS[3], ARGV[1]) end
local gone = redis.call('HGET', KEYS[1], ARGV[1])
if not gone then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local gone_entry = decode(gone)
local users, count, last = {}, 0, true
local best, best_t = nil, -1
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local entry = decode(raw)
  if entry ~= nil then
    local user = entry['u']
    if user == ARGV[2] then
      last = false
      local t = tonumber(entry['t'])
      if type(entry['s']) == 'string' and t and t > best_t then best, best_t = entry['s'], t end
    end
    if not users[user] then users[user] = true count = count + 1 end
  end
end
if last then
  redis.call('PUBLISH', KEYS[2], 'p- ' .. ARGV[3] .. count .. ARGV[4])
elseif gone_entry ~= nil and type(gone_entry['s']) == 'string' and (tonumber(gone_entry['t']) or 0) >= best_t then
  redis.call('PUBLISH', KEYS[2], 's' .. ARGV[6] .. (best or 'null') .. ARGV[7])
end
return 1
