-- The times of the newest completed jobs, for the wait and run percentiles, in one call
-- (mailqueue.queue_stats, read_queue_charts): as 500 HMGETs in a pipeline they were most of a
-- queue page's time (packing and parsing 500 replies).
-- KEYS: 1 completed. ARGV: the job key prefix (`<prefix>:<queue>:`), how many.
-- Replies "timestamp,processedOn,finishedOn,delay;..." newest first.
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'timestamp', 'processedOn', 'finishedOn', 'delay')
  out[#out + 1] = (f[1] or '') .. ',' .. (f[2] or '') .. ',' .. (f[3] or '') .. ',' .. (f[4] or '')
end
return table.concat(out, ';')
