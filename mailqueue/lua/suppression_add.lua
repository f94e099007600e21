-- Suppress an address (mailqueue.mail.suppressions, SuppressionList.add), the counts per
-- reason kept in step.
-- KEYS: the list, the counts. ARGV: address, entry (JSON), reason, "1" to replace an entry.
-- Returns 1 when the address was added (or its entry replaced), 0 when it was there already.
local old = redis.call("HGET", KEYS[1], ARGV[1])
if old and ARGV[4] ~= "1" then return 0 end
if old then
  local ok, entry = pcall(cjson.decode, old)
  if ok and entry.reason then redis.call("HINCRBY", KEYS[2], entry.reason, -1) end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("HINCRBY", KEYS[2], ARGV[3], 1)
return 1
