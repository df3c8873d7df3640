-- Charge a response's tokens to every scope's token buckets (ratelimit.go).
-- KEYS[i]: the hash of scope i (fields r, i, o as in check.lua).
-- ARGV[1], ARGV[2]: input and output tokens; ARGV[2i+1], ARGV[2i+2]: scope
-- i's input and output tokens per minute (0 = none). A bucket may go into
-- debt: its instant moves past now + 1 minute. Returns {now (µs)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local W = 60000000
local input = tonumber(ARGV[1])
local output = tonumber(ARGV[2])
for s = 1, #KEYS do
  local il = tonumber(ARGV[2 * s + 1]) or 0
  local ol = tonumber(ARGV[2 * s + 2]) or 0
  if (il > 0 and input > 0) or (ol > 0 and output > 0) then
    local h = redis.call('HMGET', KEYS[s], 'r', 'i', 'o')
    local r = tonumber(h[1]) or 0
    local i = math.max(tonumber(h[2]) or 0, now)
    local o = math.max(tonumber(h[3]) or 0, now)
    if il > 0 and input > 0 then
      i = i + input * W / il
      redis.call('HSET', KEYS[s], 'i', string.format('%.0f', i))
    end
    if ol > 0 and output > 0 then
      o = o + output * W / ol
      redis.call('HSET', KEYS[s], 'o', string.format('%.0f', o))
    end
    local last = math.max(r, i, o)
    redis.call('PEXPIRE', KEYS[s], math.floor((last - now) / 1000) + 1)
  end
end
return {now}
