-- A task whose running attempt lost its worker (the lease ran out): the attempt counts as failed
-- with WorkerLost; the next one is enqueued at once, or the task fails when attempts are used up.
-- A: id, attempt seen by the caller, error json (retryable), error json (final), mq queue,
--    message id, message data. Returns {new state} or {"skip"}.
local id, attempt, err_retry, err_final, mq_queue, rid, data = unpack(A, 1, 7)
local t = tkey(id)
local lease = redis.call("ZSCORE", P .. ":leases", id)
local state, cur, cancel, max_attempts = unpack(
  redis.call("HMGET", t, "state", "attempt", "cancel", "max_attempts"))
if state ~= "RUNNING" then
  redis.call("ZREM", P .. ":leases", id)
  return {"skip"}
end
if cur ~= attempt or (lease and tonumber(lease) > NOW) then return {"skip"} end
if cancel == "1" then
  move(id, state, "CANCELLED")
  emit(id, {"type", "state", "state", "CANCELLED", "attempt", cur,
            "reason", redis.call("HGET", t, "cancel_reason") or ""})
  return {"CANCELLED"}
end
if tonumber(cur) < tonumber(max_attempts) then
  redis.call("HSET", t, "error", err_retry)
  move(id, state, "RETRYING")
  enqueue(id, mq_queue, rid, data)
  emit(id, {"type", "state", "state", "RETRYING", "attempt", cur, "error", err_retry, "next", tostring(NOW)})
  return {"RETRYING"}
end
redis.call("HSET", t, "error", err_final)
move(id, state, "FAILED")
emit(id, {"type", "state", "state", "FAILED", "attempt", cur, "error", err_final})
return {"FAILED"}
