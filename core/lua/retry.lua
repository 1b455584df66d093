-- Run a FAILED or CANCELLED task again: a new attempt series on the same id, its events
-- continuing the same sequence (a PENDING state event with reason "retry", then RUNNING of
-- attempt n+1). The attempt counter keeps counting, so the series gets a fresh budget by raising
-- max_attempts to attempt + budget (begin, finish and reap compare with it unchanged); `budget`
-- keeps the task's own max_attempts across retries.
-- A: id, attempt seen by the caller (the message starts attempt + 1), request id ("" for none),
--    mq queue, message id, message data.
-- Returns {"retried", task hash} (as HGETALL, PENDING: read here, before a worker can start it),
-- {"same", task hash} (this request id retried it last), {"state", state} (not FAILED or
-- CANCELLED), {"moved"} (the attempt changed since the caller read it) or {"missing"}.
local id, attempt, request, mq_queue, rid, data = unpack(A, 1, 6)
local t = tkey(id)
local state, cur, max_attempts, budget, last_request, idem, tenant = unpack(
  redis.call("HMGET", t, "state", "attempt", "max_attempts", "budget", "retry_request", "idem",
             "tenant"))
if not state then return {"missing"} end
if request ~= "" and last_request == request then return {"same", redis.call("HGETALL", t)} end
if state ~= "FAILED" and state ~= "CANCELLED" then return {"state", state} end
if cur ~= attempt then return {"moved"} end
budget = budget or max_attempts
-- Kept while it runs again: move() gives them the retention once more when it ends.
redis.call("PERSIST", t)
redis.call("PERSIST", P .. ":e:" .. id)
if idem and idem ~= "" then redis.call("PERSIST", scope(tenant) .. ":idem:" .. idem) end
redis.call("HDEL", t, "error", "result", "cancel", "cancel_reason", "finished")
redis.call("HSET", t, "budget", budget, "max_attempts", tonumber(cur) + tonumber(budget),
  "retry_request", request)
move(id, state, "PENDING")
emit(id, {"type", "state", "state", "PENDING", "attempt", cur, "reason", "retry"})
enqueue(id, mq_queue, rid, data)
return {"retried", redis.call("HGETALL", t)}
