-- A batch of job-event entries from one queue's events stream, and the audit writer's new
-- cursor for that queue, in one step (mailqueue.audit, AuditLog.write_job_events).
-- KEYS: the lease, the cursor hash, the audit stream.
-- ARGV: the lease token, the queue, the batch's last stream id, MAXLEN, then JSON
-- [[stream id, [field, value, ...]], ...].
-- Nothing is written unless the caller still holds the lease (a holder that lost it in a
-- pause must not write beside its successor); ids at or below the stored cursor are
-- skipped, so a batch sent twice (a lost reply, a retry) is written once. Returns the number
-- of entries written, or -1 without the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am > bm or (am == bm and tonumber(as) > tonumber(bs))
end
local cursor = redis.call('HGET', KEYS[2], ARGV[2])
local written = 0
for _, entry in ipairs(cjson.decode(ARGV[5])) do
  if not cursor or after(entry[1], cursor) then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(entry[2]))
    written = written + 1
  end
end
if not cursor or after(ARGV[3], cursor) then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
return written
