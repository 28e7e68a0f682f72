-- KEYS epoch, seq, history. ARGV new_epoch, since (-1: none), ttl, client_epoch.
-- Returns {epoch, last_seq, recovered (0/1), frames after since}.
return snapshot(ensure_epoch())
