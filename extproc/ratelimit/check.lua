-- Check and take one request from every scope's buckets (ratelimit.go).
-- KEYS[i]: the hash of scope i, fields r, i, o: the theoretical arrival
-- time (µs, Redis time) of its request, input-token and output-token
-- buckets. ARGV[3i-2..3i]: scope i's limits per minute (0 = none).
-- Returns {allowed (1/0), retry (µs), now (µs), then per scope the three
-- instants after the check}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local W = 60000000
local n = #KEYS
local out = {1, 0, now}
local newr = {}
local allowed = true
local retry = 0
for s = 1, n do
  local h = redis.call('HMGET', KEYS[s], 'r', 'i', 'o')
  local base = 3 * s - 3
  for d = 1, 3 do
    local tat = math.max(tonumber(h[d]) or 0, now)
    local limit = tonumber(ARGV[base + d]) or 0
    if limit > 0 then
      if d == 1 then
        -- Whole microseconds: the stored instants stay exact integers.
        local nt = tat + math.floor(W / limit)
        if nt - now > W then
          allowed = false
          retry = math.max(retry, nt - W - now)
        else
          newr[s] = nt
        end
      elseif tat - now >= W then
        allowed = false
        retry = math.max(retry, tat - W - now + 1)
      end
    end
    out[3 + base + d] = tat
  end
end
if not allowed then
  out[1] = 0
  out[2] = math.ceil(retry)
  return out
end
for s = 1, n do
  local nt = newr[s]
  if nt then
    redis.call('HSET', KEYS[s], 'r', string.format('%.0f', nt))
    local last = math.max(nt, out[3 + 3 * s - 1], out[3 + 3 * s])
    redis.call('PEXPIRE', KEYS[s], math.floor((last - now) / 1000) + 1)
    out[3 + 3 * s - 2] = nt
  end
end
return out
