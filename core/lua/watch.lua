-- A: interest (ms), marks ("1": reply with each task's mark), then task ids.
-- Registers a server's interest in these tasks' live events until NOW + interest: `emit` publishes
-- a watched task's events (`watched` in _lib.lua). GT: a longer interest another server holds
-- stays. Used when a group watch takes tasks in (before it replays them) and by every server's
-- periodic renewal of its open watches (server/fanout.py); interest that lapsed is forgotten.
-- Returns, with marks, {state or false, seq} per task (false: unknown or expired); else {}.
local ttl, marks, out = tonumber(A[1]), A[2] == "1", {}
local W = P .. ":watched"
redis.call("ZREMRANGEBYSCORE", W, "-inf", NOW - 1)
for i = 3, #A do
  redis.call("ZADD", W, "GT", NOW + ttl, A[i])
  if marks then
    local state, seq = unpack(redis.call("HMGET", tkey(A[i]), "state", "seq"))
    table.insert(out, {state, seq or "0"})
  end
end
return out
