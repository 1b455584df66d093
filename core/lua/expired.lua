-- A: limit. Returns up to `limit` ids of running attempts whose lease ran out by Redis's clock.
return redis.call("ZRANGEBYSCORE", P .. ":leases", 0, NOW, "LIMIT", 0, tonumber(A[1]))
