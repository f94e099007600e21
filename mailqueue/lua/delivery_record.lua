-- Record a delivery (mailqueue.mail.delivery, DeliveryLog.record): the delivery, kept for
-- the record TTL; the claim and the unconfirmed mark released; the attempt's entries in the
-- delivery log. One script, so one round trip for all of it.
-- KEYS: record, claim, unconfirmed mark, then the message log's keys (with the campaign's).
-- ARGV: the record (JSON), its TTL (s), then the message log's arguments (log_entries).
--#include message_log_functions.lua
redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
redis.call("DEL", KEYS[2], KEYS[3])
log_entries({KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}, ARGV, 3)
return 1
