-- Run a FAILED or CANCELLED task again: a new attempt series on the same id, its events
-- continuing the same sequence (a PENDING state event with reason "retry", then RUNNING of
-- attempt n+1). The attempt counter keeps counting, so the series gets a fresh budget by raising
-- max_attempts to attempt + budget (begin, finish and reap compare with it unchanged); `budget`
-- keeps the task's own max_attempts across retries.
-- A: id, attempt seen by the caller (the message starts attempt + 1), request id ("" for none),
--    mq queue, message id, message data; then, for one step of a RedriveTasks operation, the
--    operation's progress hash and the cursor position this id is at (else both absent).
-- Returns {"retried", task hash} (as HGETALL, PENDING: read here, before a worker can start it),
-- {"same", task hash} (this request id retried it last), {"state", state} (not FAILED or
-- CANCELLED), {"moved"} (the attempt changed since the caller read it) or {"missing"}.
-- A redrive step first checks that the operation's cursor is still at the given position (else
-- {"cursor"}: another step did it, nothing changes); every answer but "moved" then advances the
-- cursor and counts the id as retried or skipped in the same atomic step, so a step sent twice
-- (a retried pipeline, a reaped attempt's successor) never retries a task twice. A redrive step
-- answers {"retried"} without the hash.
local id, attempt, request, mq_queue, rid, data, op, pos = unpack(A, 1, 8)
local t = tkey(id)
local function step(outcome, ...)
  if op then
    redis.call("HINCRBY", op, "cursor", 1)
    redis.call("HINCRBY", op, outcome, 1)
  end
  return {...}
end
if op and redis.call("HGET", op, "cursor") ~= pos then return {"cursor"} end
local state, cur, max_attempts, budget, last_request, idem, tenant = unpack(
  redis.call("HMGET", t, "state", "attempt", "max_attempts", "budget", "retry_request", "idem",
             "tenant"))
if not state then return step("skipped", "missing") end
if request ~= "" and last_request == request then
  if op then return step("skipped", "same") end
  return {"same", redis.call("HGETALL", t)}
end
if state ~= "FAILED" and state ~= "CANCELLED" then return step("skipped", "state", state) end
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
if op then return step("retried", "retried") end
return {"retried", redis.call("HGETALL", t)}
