-- The first ARGV[1] bytes of a job's data (mailqueue.job_view, get_job_view), cut before a
-- UTF-8 continuation byte so that the text stays decodable; computed inside Redis so a large
-- payload never crosses the wire. KEYS: the job's hash.
local v = redis.call('HGET', KEYS[1], 'data')
if not v then return false end
local n = tonumber(ARGV[1])
if #v <= n then return v end
local b = string.byte(v, n + 1)
while n > 0 and b >= 128 and b < 192 do
  n = n - 1
  b = string.byte(v, n + 1)
end
return string.sub(v, 1, n)
