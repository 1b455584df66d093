-- A task whose kind no live worker has served for too long: it fails without running, saying so.
-- A: id, attempt the message would start, error json. Returns {"FAILED"} or {"skip"} when the
-- task moved on meanwhile (finished, running, or another attempt's message); safe to call again.
local id, msg_attempt, err = A[1], tonumber(A[2]), A[3]
local t = tkey(id)
local state, attempt = unpack(redis.call("HMGET", t, "state", "attempt"))
if not state or TERMINAL[state] or state == "RUNNING" then return {"skip"} end
if msg_attempt ~= tonumber(attempt) + 1 then return {"skip"} end
redis.call("HSET", t, "error", err)
move(id, state, "FAILED")
emit(id, {"type", "state", "state", "FAILED", "attempt", attempt, "error", err})
return {"FAILED"}
