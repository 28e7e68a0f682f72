-- A stream whose epoch key is gone (expired, or Redis restarted empty) starts over: new epoch,
-- seq from 1, no history. Resuming clients then see the epoch change and are told
-- recovered:false instead of trusting a restarted counter. KEYS[1..3] epoch, seq, history; ARGV[1] new_epoch.
local function ensure_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch)
    redis.call('DEL', KEYS[2], KEYS[3])
  end
  return epoch
end
