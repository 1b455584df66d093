-- A: id, attempt the message starts, lease ms, delivery token (unique per delivery), then the
--    delivered Dramatiq message's ack set, queue and id ("" when the caller acks it itself).
-- Returns {"run", payload, max_attempts, traceparent or "", waited} or {"skip", reason}; waited
-- is the first attempt's ms from when the task was due (created, or not_before if later) until
-- now, else -1. Calling it again with the same token answers "run" again (waited -1: measured
-- once), so a retried call after a lost reply is harmless.
local id, msg_attempt, lease_ms, token = A[1], tonumber(A[2]), tonumber(A[3]), A[4]
-- Dramatiq's ack (its dispatch.lua "ack"), done here so the consumer makes no round trip of its
-- own (worker/transport.py): run or skipped, this delivery is over. From here on a lost worker
-- is the lease's business (the reaper), as it always was for the attempt itself.
local ack_set, ack_queue, ack_rid = A[5], A[6], A[7]
if ack_set and ack_set ~= "" and redis.call("SREM", ack_set, ack_rid) > 0 then
  redis.call("HDEL", mq_msgs(ack_queue), ack_rid)
end
local t = tkey(id)
local state, attempt, payload, max_attempts, out, owner, trace, created, not_before = unpack(
  redis.call("HMGET", t, "state", "attempt", "payload", "max_attempts", "out", "token", "trace",
             "created", "not_before"))
trace = trace or ""
if not state then return {"skip", "missing"} end
if TERMINAL[state] then return {"skip", "finished " .. state} end
if state == "RUNNING" then
  if owner == token then return {"run", payload, max_attempts, trace, -1} end
  return {"skip", "running elsewhere"}
end
if msg_attempt ~= tonumber(attempt) + 1 then return {"skip", "stale attempt " .. msg_attempt} end
if out then
  emit(id, {"type", "reset", "attempt", out})
  redis.call("HDEL", t, "out", "ttfo")
end
move(id, state, "RUNNING")
redis.call("HSET", t, "attempt", msg_attempt, "started", NOW, "token", token)
redis.call("HDEL", t, "evn")
redis.call("ZADD", P .. ":leases", NOW + lease_ms, id)
emit(id, {"type", "state", "state", "RUNNING", "attempt", tostring(msg_attempt)})
local waited = -1
if msg_attempt == 1 then
  waited = math.max(0, NOW - math.max(tonumber(created) or NOW, tonumber(not_before) or 0))
end
return {"run", payload, max_attempts, trace, waited}
