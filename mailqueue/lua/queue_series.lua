-- A queue's throughput series for one window (mailqueue.queue_stats, queue_series_command).
-- KEYS: 1 completed, 2 failed, 3 metrics:completed, 4 metrics:failed, 5 metrics:completed:data,
-- 6 metrics:failed:data, 7 id, 8 wait, 9 paused, 10 active, 11 delayed, 12 prioritized,
-- 13 waiting-children. ARGV: window start (ms), bucket width (ms), number of buckets.
-- Replies are comma-joined strings: a table of single integers costs redis-py (no hiredis)
-- more to parse than the script costs Redis.
local start, width, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for k = 1, 2 do
  local counts = {}
  for i = 0, n - 1 do
    -- The newest bucket is open-ended: a worker whose clock runs ahead still counts.
    local hi = '+inf'
    if i < n - 1 then hi = '(' .. string.format('%d', start + (i + 1) * width) end
    counts[i + 1] = redis.call('ZCOUNT', KEYS[k], string.format('%d', start + i * width), hi)
  end
  out[#out + 1] = table.concat(counts, ',')
  local oldest = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  out[#out + 1] = oldest[2] or ''
  local m = redis.call('HMGET', KEYS[k + 2], 'prevTS', 'count', 'prevCount')
  local len = redis.call('LLEN', KEYS[k + 4])
  -- data[i] is the minute before prevTS's minute, minus i: read back to the window start.
  local need = 0
  if m[1] then need = math.floor(tonumber(m[1]) / 60000) - math.floor(start / 60000) end
  local data = {}
  if need > 0 and len > 0 then data = redis.call('LRANGE', KEYS[k + 4], 0, need - 1) end
  out[#out + 1] = (m[1] or '') .. ',' .. (m[2] or '') .. ',' .. (m[3] or '') .. ',' .. len
  out[#out + 1] = table.concat(data, ',')
end
local present = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
for i = 8, 10 do present = present + redis.call('LLEN', KEYS[i]) end
for i = 11, 13 do present = present + redis.call('ZCARD', KEYS[i]) end
out[#out + 1] = (redis.call('GET', KEYS[7]) or '0') .. ',' .. present
return out
