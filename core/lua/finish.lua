-- A: id, attempt, outcome (ok | error | cancelled), result json, error json, retryable (0/1),
--    retry delay (ms), retry mq queue, retry message id, retry message data, tokens the attempt
--    used (-1: not reported; `debit` in _limits.lua).
-- Returns {new state} or {"stale"} when the attempt no longer owns the task.
local id, attempt, outcome, result, err, retryable, delay_ms, mq_queue, rid, data = unpack(A, 1, 10)
local t = tkey(id)
-- One read of the hash: finish's own fields, the token budget's (`debit`) and move()'s.
local state, cur, cancel, max_attempts, started, failed, tok, tok_res, kind, queue, created, ckey,
      wait, tenant, idem = unpack(
  redis.call("HMGET", t, "state", "attempt", "cancel", "max_attempts", "started", "error", "tok",
             "tok_res", "kind", "queue", "created", "ckey", "wait", "tenant", "idem"))
if state ~= "RUNNING" or cur ~= attempt then return {"stale"} end
local h = {kind = kind, queue = queue, created = created, ckey = ckey, wait = wait,
           tenant = tenant, idem = idem}
debit(id, attempt, tonumber(A[11]) or -1, tok, tok_res)
if cancel == "1" or outcome == "cancelled" then
  local reason = redis.call("HGET", t, "cancel_reason") or ""
  move(id, state, "CANCELLED", h)
  emit(id, {"type", "state", "state", "CANCELLED", "attempt", attempt, "reason", reason})
  return {"CANCELLED"}
end
if outcome == "ok" then
  if failed then redis.call("HDEL", t, "error") end  -- an earlier attempt's
  -- The last 1,000 run times (server/store.py `stats` reads no more), trimmed once per 100.
  local rt = scope(tenant) .. ":rt:" .. kind
  if redis.call("LPUSH", rt, int(NOW - tonumber(started))) > 1100 then
    redis.call("LTRIM", rt, 0, 999)
  end
  move(id, state, "SUCCEEDED", h, {"result", result})
  emit(id, {"type", "state", "state", "SUCCEEDED", "attempt", attempt, "result", result})
  return {"SUCCEEDED"}
end
if retryable == "1" and tonumber(attempt) < tonumber(max_attempts) then
  move(id, state, "RETRYING", h, {"error", err})
  enqueue(id, mq_queue, rid, data)
  emit(id, {"type", "state", "state", "RETRYING", "attempt", attempt, "error", err,
            "next", tostring(NOW + tonumber(delay_ms))})
  return {"RETRYING"}
end
move(id, state, "FAILED", h, {"error", err})
emit(id, {"type", "state", "state", "FAILED", "attempt", attempt, "error", err})
return {"FAILED"}
