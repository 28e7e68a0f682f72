-- KEYS epoch, seq, history, presence, node_sessions, org_sessions, user_connections, ban, users,
-- channel, presence_version.
-- ARGV new_epoch, since, ttl, client_epoch (as SNAPSHOT), connection_id, entry_json, user_id,
-- session_json, node_id, session_id, max_connections_per_user (-1: the connection is counted
-- already, by ADMIT), max_sessions_per_org, roster_limit, want_entries ('1': return about
-- roster_limit entries even in a session over it; '0': the node has them cached), user_joined
-- frame before / after its count.
-- Admission and join in one round trip: the ban, the user's connections on live nodes, the
-- org's live sessions; then the presence entry, the stream snapshot and the node's session index.
-- Returns {refusal} ('banned', 'user' or 'sessions': nothing was changed), else
-- {entries, snapshot, participant_count, presence_version}: every entry while the
-- session has at most roster_limit users, about roster_limit of them (or none) beyond. The
-- user_joined of a first connection is published here, in the order of the scripts, with its
-- presence version: a node drops what it held for the newcomer up to the version its welcome shows.
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
-- The session's users (user -> its connections here): who is first, and how many, in O(1).
local first = redis.call('HINCRBY', KEYS[9], ARGV[7], 1) == 1 and 1 or 0
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
local count = redis.call('HLEN', KEYS[9])
local limit = tonumber(ARGV[13])
local entries = {}
if count <= limit then
  -- A roster the welcome lists whole: every entry (and away with any that does not decode).
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all, 2 do
    if decode(all[i + 1]) == nil then
      redis.call('HDEL', KEYS[4], all[i])
    else
      table.insert(entries, all[i + 1])
    end
  end
elseif ARGV[14] == '1' then
  -- A big session: about ``limit`` entries are enough for a truncated welcome (the node caches it).
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[4], cursor, 'COUNT', limit)
    cursor = page[1]
    for i = 2, #page[2], 2 do table.insert(entries, page[2][i]) end
  until cursor == '0' or #entries >= limit
end
redis.call('SADD', KEYS[5], ARGV[8])
local version = presence_version(KEYS[11], tonumber(ARGV[3]))
if first == 1 then
  redis.call('PUBLISH', KEYS[10], 'p' .. version .. ' ' .. ARGV[5] .. ' ' .. ARGV[15] .. count .. ARGV[16])
end
return {entries, snapshot(ensure_epoch()), count, version}
