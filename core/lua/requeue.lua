-- A: queue, the consumer's ack set, then (message id, task id) pairs. Dramatiq's requeue of the
-- messages a consumer fetched and did not start (a graceful stop hands them back), done as its
-- dispatch.lua does, except that each goes back to the front of its task's bucket (`place()`),
-- in the order fetched, keeping its priority, fair share and turn, and wakes a consumer.
-- Returns nothing.
local queue, acks = A[1], A[2]
for i = #A - 1, 3, -2 do
  local rid, id = A[i], A[i + 1]
  if redis.call("SREM", acks, rid) > 0 and redis.call("HEXISTS", mq_msgs(queue), rid) == 1 then
    place(queue, rid, redis.call("HGET", tkey(id), "fair"), true)
  end
end
