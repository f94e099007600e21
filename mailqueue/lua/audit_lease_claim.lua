-- Take the audit writer's lease, or renew it if it is ours (mailqueue.events.audit_writer).
-- KEYS: the lease, the cursor hash. ARGV: our token, the lease TTL (ms), the floor's field.
-- Returns {1, 0} renewed, {2, 0} taken (and the floor field set if this prefix never had
-- one: the audit log starts now, a millisecond early so an event of this very millisecond
-- is not skipped), {0, ms} another holds it for `ms` more.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, 0}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local now = redis.call('TIME')
  redis.call('HSETNX', KEYS[2], ARGV[3],
             string.format('%d-0', tonumber(now[1]) * 1000 + math.floor(now[2] / 1000) - 1))
  return {2, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
