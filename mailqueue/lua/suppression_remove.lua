-- Lift a suppression (mailqueue.mail.suppressions, SuppressionList.remove), the counts per
-- reason kept in step.
-- KEYS: the list, the counts. ARGV: address. Returns the removed entry, or false.
local old = redis.call("HGET", KEYS[1], ARGV[1])
if not old then return false end
redis.call("HDEL", KEYS[1], ARGV[1])
local ok, entry = pcall(cjson.decode, old)
if ok and entry.reason then redis.call("HINCRBY", KEYS[2], entry.reason, -1) end
return old
