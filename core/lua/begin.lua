-- A: id, attempt the message starts, lease ms, delivery token (unique per delivery), the turn a
-- rate limit reserved for this message (Redis ms; 0 for none), then the delivered Dramatiq
-- message's ack set, queue and id ("" when the caller acks it itself), then the worker's token
-- budget for it: key, tokens, period ms, reservation ("" / absent: none; core/limits.py Tokens).
-- Returns {"run", payload, max_attempts, traceparent or "", waited, tenant}, {"skip", reason} or,
-- when a limit holds the task back (`_limits.lua`; nothing changes but the wait's one event),
-- {"wait", "concurrency" | "rate" | "tokens", key, limit, wait ms (0: back off), turn, tenant}
-- (tenant "" for the default one, for the worker's metrics); waited
-- is the first attempt's ms from when the task was due (created, or not_before if later) until
-- now, else -1. Calling it again with the same token answers "run" again (waited -1: measured
-- once), so a retried call after a lost reply is harmless.
local id, msg_attempt, lease_ms, token = A[1], tonumber(A[2]), tonumber(A[3]), A[4]
local turn = tonumber(A[5]) or 0
-- Dramatiq's ack (its dispatch.lua "ack"), done here so the consumer makes no round trip of its
-- own (worker/transport.py): once the attempt runs or the delivery is skipped, the delivery is
-- over, and from then on a lost worker is the lease's business (the reaper), as it always was
-- for the attempt itself. A delivery a limit holds back is not acked here: until the worker has
-- put its copy on the delay queue, Dramatiq's own ack set is what keeps the task's message.
local ack_set, ack_queue, ack_rid = A[6], A[7], A[8]
local function acked(reply)
  if ack_set and ack_set ~= "" and redis.call("SREM", ack_set, ack_rid) > 0 then
    redis.call("HDEL", mq_msgs(ack_queue), ack_rid)
  end
  return reply
end
local tk = nil
if A[9] and A[9] ~= "" then tk = {A[9], tonumber(A[10]), tonumber(A[11]), tonumber(A[12])} end
local t = tkey(id)
-- One read of the hash: begin's own fields and move()'s.
local state, attempt, payload, max_attempts, out, owner, trace, created, not_before, ckey, climit,
      rkey, rcount, rperiod, tenant, kind, queue, wait, evn = unpack(
  redis.call("HMGET", t, "state", "attempt", "payload", "max_attempts", "out", "token", "trace",
             "created", "not_before", "ckey", "climit", "rkey", "rcount", "rperiod", "tenant",
             "kind", "queue", "wait", "evn"))
local h = {kind = kind, queue = queue, created = created, wait = wait, tenant = tenant}
trace = trace or ""
tenant = tenant or ""
if not state then return acked({"skip", "missing"}) end
if TERMINAL[state] then return acked({"skip", "finished " .. state}) end
if state == "RUNNING" then
  if owner == token then return acked({"run", payload, max_attempts, trace, -1, tenant}) end
  return acked({"skip", "running elsewhere"})
end
if msg_attempt ~= tonumber(attempt) + 1 then
  return acked({"skip", "stale attempt " .. msg_attempt})
end
if ckey or rkey or tk then
  local refused = admit(id, msg_attempt, lease_ms, turn, ckey, tonumber(climit), rkey,
                        tonumber(rcount), tonumber(rperiod), tk)
  if refused then
    waiting(id, msg_attempt, refused, refused[1] == "tokens" and tk[3] or tonumber(rperiod))
    table.insert(refused, tenant)
    return {"wait", unpack(refused)}
  end
end
if out then
  emit(id, {"type", "reset", "attempt", out})
  redis.call("HDEL", t, "out", "ttfo")
end
move(id, state, "RUNNING", h, {"attempt", A[2], "started", NOW_S, "token", token})
if evn then redis.call("HDEL", t, "evn") end
redis.call("ZADD", P .. ":leases", int(NOW + lease_ms), id)
emit(id, {"type", "state", "state", "RUNNING", "attempt", tostring(msg_attempt)})
local waited = -1
if msg_attempt == 1 then
  waited = math.max(0, NOW - math.max(tonumber(created) or NOW, tonumber(not_before) or 0))
end
return acked({"run", payload, max_attempts, trace, waited, tenant})
