-- Claim the right to send one message (mailqueue.mail.delivery, DeliveryLog.claim).
-- One round trip: the record, the claim, the lock of the claim's holder, the unconfirmed
-- mark and the suppression list, read and written atomically.
-- KEYS: record, claim, the job's lock, unconfirmed mark, the suppression list.
-- ARGV: our claim value, claim TTL (ms), "1" for at-most-once, the job's attemptsMade,
--       the mark's TTL (s), then the recipients to look up in the suppression list
--       (lowercased; none when the template ignores it).
-- Replies {status, record or false, PTTL or false, {address, entry, ...}}; "suppressed":
-- every recipient is on the list, nothing claimed.
local record = redis.call("GET", KEYS[1])
if record then
  local ok, data = pcall(cjson.decode, record)
  if ok and (type(data.rejected) ~= "table" or next(data.rejected) == nil) then
    return {"recorded", record}
  end
end
local suppressed = {}
if #ARGV > 5 then
  local entries = redis.call("HMGET", KEYS[5], unpack(ARGV, 6))
  for i = 6, #ARGV do
    if entries[i - 5] then
      suppressed[#suppressed + 1] = ARGV[i]
      suppressed[#suppressed + 1] = entries[i - 5]
    end
  end
  if #suppressed == 2 * (#ARGV - 5) then
    return {"suppressed", record or false, false, suppressed}
  end
end
local held = redis.call("GET", KEYS[2])
local status = "claimed"
if held and held ~= ARGV[1] then
  if string.sub(held, 1, 4) == "ttl:" then
    return {"busy", record or false, redis.call("PTTL", KEYS[2])}
  end
  if redis.call("GET", KEYS[3]) == string.sub(held, 6) then
    return {"busy", record or false, redis.call("PTTL", KEYS[3])}
  end
  status = "taken"
  if ARGV[3] == "1" then
    local marked = redis.call("GET", KEYS[4])
    if not marked or marked == ARGV[4] then
      redis.call("SET", KEYS[4], ARGV[4], "EX", ARGV[5])
      return {"unconfirmed", record or false}
    end
    status = "released"
  end
end
redis.call("SET", KEYS[2], ARGV[1], "PX", ARGV[2])
redis.call("DEL", KEYS[4])
return {status, record or false, false, suppressed}
