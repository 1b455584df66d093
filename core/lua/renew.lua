-- A: lease (ms), then the ids of attempts the caller runs. Extends each lease that still exists
-- to NOW + lease (XX: a lease the attempt's finish or the reaper removed stays removed).
-- Returns how many were extended.
local lease_ms, renewed = tonumber(A[1]), 0
for i = 2, #A do
  renewed = renewed + redis.call("ZADD", P .. ":leases", "XX", "CH", NOW + lease_ms, A[i])
end
return renewed
