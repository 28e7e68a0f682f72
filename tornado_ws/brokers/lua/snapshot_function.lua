-- The stream's state after ``since``: {epoch, last_seq, recovered (0/1), frames after since}.
-- KEYS[1..3] epoch, seq, history; ARGV[1..4] new_epoch, since (-1: none), ttl, client_epoch.
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
