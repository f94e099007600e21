-- Write a stream entry once across every process that sees the same trigger (mailqueue.audit:
-- alerts, which several processes may raise): the first to set the marker key writes, the
-- others get false.
-- KEYS: the stream, the marker. ARGV: the marker's TTL (ms), MAXLEN, then field, value, ...
-- Returns the entry's id, or false.
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
