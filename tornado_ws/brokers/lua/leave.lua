-- KEYS presence, channel, user_connections, users, presence_version. ARGV connection_id, user_id, user_left frame before /
-- after its count, release ('1': the connection leaves the user's count too; '0': a /ws
-- membership, whose connection stays), presence_state frame before / after its state, ttl.
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
if gone_entry == nil then
  return 1  -- not an entry we wrote: nobody to announce
end
local user_left = redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0
local version = presence_version(KEYS[5], tonumber(ARGV[8]))
if user_left then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
if user_left then
  redis.call('PUBLISH', KEYS[2], 'p' .. version .. ' - ' .. ARGV[3] .. redis.call('HLEN', KEYS[4]) .. ARGV[4])
elseif type(gone_entry['s']) == 'string' then
  -- Did this entry hold the user's newest state? Then the newest of the others is its state now.
  local gone_t, best, best_t = tonumber(gone_entry['t']) or 0, nil, -1
  for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
    local entry = decode(raw)
    if entry ~= nil and entry['u'] == ARGV[2] then
      local t = tonumber(entry['t'])
      if type(entry['s']) == 'string' and t and t > best_t then best, best_t = entry['s'], t end
    end
  end
  if gone_t >= best_t then
    redis.call('PUBLISH', KEYS[2], 's' .. version .. ' ' .. ARGV[6] .. (best or 'null') .. ARGV[7])
  end
end
return 1
