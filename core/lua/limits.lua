-- GetStats' figures per limit key (`_limits.lua`), and the forgetting of idle keys: a key with
-- nothing running, nothing waiting and no start within its period leaves P:lim:keys.
-- A: most keys to return. Returns a flat list: field ("c:<key>" | "r:<key>" | "t:<key>"), its
-- value ("<limit>" | "<N> <period ms>"), busy (concurrency: running now; rate: starts within the
-- last period; tokens: tokens debited or reserved within the last period), waiting (tasks that
-- emitted Waiting for it and have not started).
local most, out = tonumber(A[1]), {}
local all = redis.call("HGETALL", P .. ":lim:keys")
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local key = string.sub(field, 3)
  local waiting = redis.call("ZCARD", P .. ":lim:w:" .. field)
  local busy
  if string.sub(field, 1, 1) == "c" then
    busy = redis.call("ZCOUNT", P .. ":lim:c:" .. key, "(" .. NOW, "+inf")
  elseif string.sub(field, 1, 1) == "t" then
    busy = tokens_used(key, tonumber(string.match(value, " (%d+)$")) or 0)
  else
    local period = tonumber(string.match(value, " (%d+)$")) or 0
    busy = redis.call("ZCOUNT", P .. ":lim:r:" .. key, "(" .. (NOW - period), "+inf")
  end
  if busy == 0 and waiting == 0 then
    redis.call("HDEL", P .. ":lim:keys", field)
  elseif #out < most * 4 then
    table.insert(out, field)
    table.insert(out, value)
    table.insert(out, busy)
    table.insert(out, waiting)
  end
end
return out
