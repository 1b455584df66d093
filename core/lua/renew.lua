-- A: lease (ms), then the ids of attempts the caller runs. Extends each lease that still exists
-- to NOW + lease (XX: a lease the attempt's finish or the reaper removed stays removed).
-- An attempt under a concurrency limit has its share renewed with it (`_limits.lua`).
-- Returns how many were extended.
local lease_ms, renewed = tonumber(A[1]), 0
for i = 2, #A do
  local n = redis.call("ZADD", P .. ":leases", "XX", "CH", NOW + lease_ms, A[i])
  renewed = renewed + n
  local ckey = n == 1 and redis.call("HGET", tkey(A[i]), "ckey")
  if ckey then redis.call("ZADD", P .. ":lim:c:" .. ckey, "XX", NOW + lease_ms, A[i]) end
end
return renewed
