-- A: queue, message id, message data. Dramatiq's own enqueue (`Broker.do_enqueue` in
-- worker/transport.py: a delayed or retrying task's message moved on when due, a hand-back, a limit's
-- deferral), done as RedisBroker's dispatch.lua does, except that a live queue's message goes to its
-- task's bucket (`place`): a task keeps its priority and its place in the fair share when it waits.
-- Returns nothing.
local queue, rid, data = A[1], A[2], A[3]
redis.call("HSET", mq_msgs(queue), rid, data)
if string.sub(queue, -3) == ".DQ" then
  redis.call("RPUSH", mq_queue(queue), rid)
  return
end
-- The message id is the task id (core/mqlayout.py); a message of no task waits on the list.
local id = string.match(data, '"message_id":%s*"([^"]*)"')
place(queue, rid, id and redis.call("HGET", tkey(id), "fair"))
