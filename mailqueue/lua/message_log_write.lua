-- Write delivery-log entries (mailqueue.mail.message_log, MessageLog.write).
-- KEYS: the stream, by-address, by-domain, by-id, and the campaign's hash when the entries
-- are a campaign's (its counts per outcome and of send errors in a row).
-- ARGV: as log_entries from 1. Replies {send errors in a row (campaign), {entry ids}}.
--#include message_log_functions.lua
return log_entries({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, ARGV, 1)
