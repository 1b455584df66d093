-- A: replay window (ms), count.
-- Compacts up to `count` tasks that finished more than the window ago: the task's event stream
-- (at least 4 KiB in Redis 7.0 however short, most of a finished task's memory) is replaced by
-- its terminal event, kept in the hash as `tail` (its sequence alone when the hash's fields
-- make the event, else "<sequence> <fields as JSON>", the live channel's format), and the fields
-- only a running attempt uses are dropped. GetTask and
-- ListTasks are unchanged; a watch replays an EventsTrimmed marker and then `tail`
-- (server/store.py `events_after`). Ids whose task expired or runs again just leave `fin`.
-- Returns {ids looked at, tasks compacted}.
local window, count = tonumber(A[1]), tonumber(A[2])
local fin = P .. ":fin"
local ids = redis.call("ZRANGEBYSCORE", fin, 0, NOW - window, "LIMIT", 0, count)
local compacted = 0
for _, id in ipairs(ids) do
  local t, e = tkey(id), P .. ":e:" .. id
  local state = redis.call("HGET", t, "state")
  if state and TERMINAL[state] then
    local last = redis.call("XREVRANGE", e, "+", "-", "COUNT", 1)[1]
    if last then
      local seq = string.match(last[1], "^(%d+)-")
      -- Every terminal event is the hash's own state, attempt, outcome and finish time: then the
      -- hash keeps just its sequence (a short value keeps a small hash in Redis's compact
      -- encoding), and server/store.py `_tail` builds it again. Anything else is kept whole.
      local h = redis.call("HMGET", t, "attempt", "finished", "result", "error", "cancel_reason")
      local outcome = {SUCCEEDED = {"result", h[3]}, FAILED = {"error", h[4]},
                       CANCELLED = {"reason", h[5] or ""}}
      local x = outcome[state]
      local expected = {"type", "state", "state", state, "attempt", h[1], x[1], x[2], "ts", h[2]}
      local same = #expected == #last[2]
      for i = 1, #expected do same = same and expected[i] == last[2][i] end
      redis.call("HSET", t, "tail", same and seq or (seq .. " " .. cjson.encode(last[2])))
      redis.call("DEL", e)
      -- What only a running attempt or a retried submit script reads.
      redis.call("HDEL", t, "token", "evn", "rid", "mq", "fp")
      compacted = compacted + 1
    end
  end
end
if #ids > 0 then redis.call("ZREM", fin, unpack(ids)) end
return {#ids, compacted}
