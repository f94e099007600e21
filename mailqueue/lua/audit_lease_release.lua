-- Give the audit writer's lease back, if it is still ours (mailqueue.events.audit_writer).
-- KEYS: the lease. ARGV: our token. Returns 1 released, 0 not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
