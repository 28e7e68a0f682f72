-- KEYS epoch, seq, history, presence, node_sessions, org_sessions, user_connections, ban.
-- ARGV new_epoch, since, ttl, client_epoch (as SNAPSHOT), connection_id, entry_json, user_id,
-- session_json, node_id, session_id, max_connections_per_user (-1: the connection is counted
-- already, by ADMIT), max_sessions_per_org.
-- Admission and join in one round trip: the ban, the user's connections on live nodes, the
-- org's live sessions; then the presence entry, the stream snapshot and the node's session index.
-- Returns {refusal} ('banned', 'user' or 'sessions': nothing was changed), else
-- {first_of_user, entries, snapshot}.
if redis.call('EXISTS', KEYS[8]) == 1 then
  return {'banned'}
end
-- max_connections_per_user -1: a /ws membership, whose connection ADMIT counted already.
local counted = tonumber(ARGV[11]) < 0
if not counted and not user_room(KEYS[7], ARGV[9], tonumber(ARGV[11])) then
  return {'user'}
end
local at = now()
if not room(KEYS[6], ARGV[10], tonumber(ARGV[12]), at) then
  return {'sessions'}
end
redis.call('ZADD', KEYS[6], at + tonumber(ARGV[3]), ARGV[10])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[3]) + 1)
if not counted then redis.call('HSET', KEYS[7], ARGV[5], ARGV[9]) end
local all = redis.call('HGETALL', KEYS[4])
local entries, first = {}, 1
for i = 1, #all, 2 do
  local entry = decode(all[i + 1])
  if entry == nil then
    redis.call('HDEL', KEYS[4], all[i])
  else
    if entry['u'] == ARGV[7] then first = 0 end
    table.insert(entries, all[i + 1])
  end
end
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
table.insert(entries, ARGV[6])
redis.call('SADD', KEYS[5], ARGV[8])
return {first, entries, snapshot(ensure_epoch())}
