-- KEYS user_connections. ARGV connection_id, node_id, max_connections_per_user.
-- Counts a /ws connection (in no session yet) against the user's cap on every node: 1 and the
-- connection is in the hash, or 0 (refused, nothing changed). Its joins then skip the count.
if not user_room(KEYS[1], ARGV[2], tonumber(ARGV[3])) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
