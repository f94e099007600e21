-- The delivery log's functions (mailqueue.mail.message_log), included by the scripts that
-- write it: message_log_write.lua and, with the delivery record, delivery_record.lua (one
-- round trip for both).
-- `log_entries(keys, argv, i)`: keys are the stream, by-address, by-domain, by-id and the
-- campaign's hash (or nil); it reads from argv[i]: the most entries, the oldest time kept
-- (ms), the number of entries, then per entry its field count and fields (name, value, ...),
-- among them `to` (recipients, comma-separated) and `mid`. Each write trims up to 50 of the
-- oldest entries (with their index members) when the log is over either bound, so the log
-- stays within them however fast it is written.
local function padded(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  return string.format("%013d-%06d", tonumber(ms), tonumber(seq))
end
local function index(verb, keys, id, fields)
  local members = {}
  for k = 1, #fields, 2 do
    if fields[k] == "to" then
      for address in string.gmatch(string.lower(fields[k + 1]), "[^,]+") do
        members[#members + 1] = {keys[2], address}
        members[#members + 1] = {keys[3], string.match(address, "@([^@]*)$") or ""}
      end
    elseif fields[k] == "mid" then
      members[#members + 1] = {keys[4], fields[k + 1]}
    end
  end
  local suffix = "\0" .. padded(id)
  for _, m in ipairs(members) do
    if verb == "add" then redis.call("ZADD", m[1], 0, m[2] .. suffix)
    else redis.call("ZREM", m[1], m[2] .. suffix) end
  end
end
local function trim(keys, max_entries, oldest_ms)
  local excess = redis.call("XLEN", keys[1]) - max_entries
  local first = redis.call("XRANGE", keys[1], "-", "+", "COUNT", 1)[1]
  if not first then return end
  local first_ms = tonumber(string.match(first[1], "^(%d+)"))
  if excess <= 0 and first_ms >= oldest_ms then return end
  for i, entry in ipairs(redis.call("XRANGE", keys[1], "-", "+", "COUNT", 50)) do
    local ms = tonumber(string.match(entry[1], "^(%d+)"))
    if i > excess and ms >= oldest_ms then break end
    index("rem", keys, entry[1], entry[2])
    redis.call("XDEL", keys[1], entry[1])
  end
end
local function count_outcome(campaign, fields)
  for k = 1, #fields, 2 do
    if fields[k] == "out" then
      local outcome = fields[k + 1]
      redis.call("HINCRBY", campaign, outcome, 1)
      if outcome == "failed" or outcome == "deferred" then
        return redis.call("HINCRBY", campaign, "errors_in_a_row", 1)
      elseif outcome == "sent" then
        redis.call("HSET", campaign, "errors_in_a_row", 0)
      end
      return 0
    end
  end
  return 0
end
local function log_entries(keys, argv, i)
  local max_entries, oldest_ms, n = tonumber(argv[i]), tonumber(argv[i + 1]), tonumber(argv[i + 2])
  i = i + 3
  local ids, errors_in_a_row = {}, 0
  for _ = 1, n do
    local count = tonumber(argv[i])
    local fields = {}
    for k = 1, count do fields[k] = argv[i + k] end
    i = i + count + 1
    local id = redis.call("XADD", keys[1], "*", unpack(fields))
    index("add", keys, id, fields)
    ids[#ids + 1] = id
    if keys[5] then errors_in_a_row = count_outcome(keys[5], fields) end
  end
  trim(keys, max_entries, oldest_ms)
  return {errors_in_a_row, ids}
end
