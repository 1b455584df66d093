-- A: id, attempt, outcome (ok | error | cancelled), result json, error json, retryable (0/1),
--    retry delay (ms), retry mq queue, retry message id, retry message data, tokens the attempt
--    used (-1: not reported; `debit` in _limits.lua).
-- Returns {new state} or {"stale"} when the attempt no longer owns the task.
local id, attempt, outcome, result, err, retryable, delay_ms, mq_queue, rid, data = unpack(A, 1, 10)
local t = tkey(id)
local state, cur, cancel, max_attempts, started, kind, tenant = unpack(
  redis.call("HMGET", t, "state", "attempt", "cancel", "max_attempts", "started", "kind", "tenant"))
if state ~= "RUNNING" or cur ~= attempt then return {"stale"} end
debit(id, attempt, tonumber(A[11]) or -1)
if cancel == "1" or outcome == "cancelled" then
  local reason = redis.call("HGET", t, "cancel_reason") or ""
  move(id, state, "CANCELLED")
  emit(id, {"type", "state", "state", "CANCELLED", "attempt", attempt, "reason", reason})
  return {"CANCELLED"}
end
if outcome == "ok" then
  redis.call("HSET", t, "result", result)
  redis.call("HDEL", t, "error")
  local rt = scope(tenant) .. ":rt:" .. kind
  redis.call("LPUSH", rt, NOW - tonumber(started))
  redis.call("LTRIM", rt, 0, 999)
  move(id, state, "SUCCEEDED")
  emit(id, {"type", "state", "state", "SUCCEEDED", "attempt", attempt, "result", result})
  return {"SUCCEEDED"}
end
redis.call("HSET", t, "error", err)
if retryable == "1" and tonumber(attempt) < tonumber(max_attempts) then
  move(id, state, "RETRYING")
  enqueue(id, mq_queue, rid, data)
  emit(id, {"type", "state", "state", "RETRYING", "attempt", attempt, "error", err,
            "next", tostring(NOW + tonumber(delay_ms))})
  return {"RETRYING"}
end
move(id, state, "FAILED")
emit(id, {"type", "state", "state", "FAILED", "attempt", attempt, "error", err})
return {"FAILED"}
