-- KEYS epoch, seq, history, channel, org_sessions. ARGV new_epoch, history_size, ttl, frame_before_seq,
-- frame_after_seq, session_id, max_sessions (0: no cap check). Sequence, keep and publish in one step,
-- so every node sees one gapless order. Returns the seq, or -1 (nothing done) when the session would
-- be new and its org is at max_sessions.
local at = now()
if not room(KEYS[5], ARGV[6], tonumber(ARGV[7]), at) then
  return -1
end
local epoch = ensure_epoch()
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
redis.call('ZADD', KEYS[5], at + ttl, ARGV[6])
redis.call('EXPIRE', KEYS[5], ttl + 1)  -- an org gone quiet leaves nothing behind
redis.call('PUBLISH', KEYS[4], 'm' .. epoch .. ' ' .. seq .. ' ' .. frame)
return seq
