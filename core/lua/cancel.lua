-- A: id, reason. Returns {"cancelled"}, {"requested"}, {"finished", state} or {"missing"}.
local id, reason = A[1], A[2]
local t = tkey(id)
local state, attempt = unpack(redis.call("HMGET", t, "state", "attempt"))
if not state then return {"missing"} end
if TERMINAL[state] then return {"finished", state} end
if state == "RUNNING" then
  redis.call("HSET", t, "cancel", "1", "cancel_reason", reason, "updated", NOW)
  redis.call("PUBLISH", P .. ":cancel", id)
  return {"requested"}
end
-- A delayed message (its queue ends in .DQ) would count as "delayed" until its time: take it
-- back. One still in the list goes with it; one a worker holds is skipped and acked at its time.
local mq, rid = unpack(redis.call("HMGET", t, "mq", "rid"))
if mq and string.sub(mq, -3) == ".DQ" then
  redis.call("HDEL", mq_msgs(mq), rid)
  redis.call("LREM", mq_queue(mq), 1, rid)
end
redis.call("HSET", t, "cancel_reason", reason)
move(id, state, "CANCELLED")
emit(id, {"type", "state", "state", "CANCELLED", "attempt", attempt, "reason", reason})
return {"cancelled"}
