-- KEYS epoch, seq, history, channel, org_sessions[, message_id]. ARGV new_epoch, history_size, ttl,
-- frame_before_seq, frame_after_seq, session_id, max_sessions (0: no cap check)[, window_ms].
-- Sequence, keep and publish in one step, so every node sees one gapless order. Returns the seq,
-- or -1 (nothing done) when the session would be new and its org is at max_sessions.
-- With a message_id key: returns {seq, duplicate}. The key holds the seq its message got for
-- window_ms; while it does, the same (org, session, user, id) is answered {that seq, 1} and
-- nothing is sequenced or sent. Checked and set in this one script: two nodes, one publish.
local keyed = KEYS[6] ~= nil
if keyed then
  local prior = redis.call('GET', KEYS[6])
  if prior then
    return {tonumber(prior), 1}
  end
end
local at = now()
if not room(KEYS[5], ARGV[6], tonumber(ARGV[7]), at) then
  if keyed then return {-1, 0} end
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
if keyed then
  redis.call('SET', KEYS[6], seq, 'PX', tonumber(ARGV[8]))
  return {seq, 0}
end
return seq
