-- A: id, attempt, n (per-attempt counter of the writer), then event fields (type first).
-- Fenced: only the running attempt may write, and each n once (a retried call is not repeated).
-- Returns {seq, cancel requested}; seq 0 when refused.
local id, attempt, n = A[1], A[2], tonumber(A[3])
local t = tkey(id)
local state, cur, cancel, started, last_n = unpack(
  redis.call("HMGET", t, "state", "attempt", "cancel", "started", "evn"))
if state ~= "RUNNING" or cur ~= attempt or n <= tonumber(last_n or "0") then
  return {0, cancel or "0"}
end
redis.call("HSET", t, "evn", n)
local fields = {}
for i = 4, #A do fields[i - 3] = A[i] end
local kind = fields[2]
if kind == "output" then
  if redis.call("HSETNX", t, "out", attempt) == 1 then
    redis.call("HSET", t, "ttfo", NOW - tonumber(started))
  end
elseif kind == "progress" then
  redis.call("HSET", t, "pfrac", fields[4], "pmsg", fields[6], "patt", attempt)
end
table.insert(fields, "attempt")
table.insert(fields, attempt)
return {emit(id, fields), cancel or "0"}
