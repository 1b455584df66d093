-- taskcast: the fetch of a live queue, inserted by core/scripts.py into Dramatiq's own
-- dispatch.lua before its commands, so one script still heartbeats, maintains and fetches; it uses
-- that script's locals (queue_name, queue_full_name, queue_messages, queue_acks, ARGS,
-- max_unpack_size). A delay queue's fetch is Dramatiq's.
-- Which messages: while no task waits in a bucket (`place()` in _lib.lua), the head of the queue's
-- list, in one LPOP with a count (Dramatiq pops them one by one). Otherwise priorities and fair
-- share: priority 1 first; within a priority, the tenant with the lowest pass, and within the
-- tenant the key with the lowest pass; each advanced by 1/weight for the message taken. The
-- queue's own list (the default tenant's tasks of priority 3 with no key, and what Dramatiq
-- requeues there) is that level's bucket of tenant "" and key "".
-- Then the wake-up is passed on: a fetch that took all it had room for and left messages behind
-- drops a token on the queue's wake-up list (when none waits there), so another idle consumer,
-- of this process or another, starts on the rest now instead of at its next poll.
if command == "fetch" and string.sub(queue_name, -3) ~= ".DQ" then
  local F = queue_full_name .. ".fair"
  local L = F .. "."
  local want = math.min(tonumber(ARGS[1]), max_unpack_size)
  local ids = {}
  if redis.call("EXISTS", L .. "1", L .. "2", L .. "3", L .. "4", L .. "5") == 0 then
    ids = redis.call("LPOP", queue_full_name, want) or {}
    if #ids > 0 then redis.call("SADD", queue_acks, unpack(ids)) end
  else
    -- `join()` of _lib.lua, again: this chunk runs inside Dramatiq's script, without that prelude.
    local function tc_join(zset, member)
      if redis.call("ZSCORE", zset, member) then return end
      local first = redis.call("ZRANGE", zset, 0, 0, "WITHSCORES")
      redis.call("ZADD", zset, first[2] or 0, member)
    end
    if redis.call("LLEN", queue_full_name) > 0 then
      tc_join(L .. "3.", "")
      tc_join(L .. "3", "")
    end
    for p = 1, 5 do
      local level = L .. p
      while #ids < want do
        local top = redis.call("ZRANGE", level, 0, 0, "WITHSCORES")
        if #top == 0 then break end
        local tenant, tpass = top[1], tonumber(top[2])
        local keys = level .. "." .. tenant
        local tfield = "w" .. p .. "." .. tenant
        local first = redis.call("ZRANGE", keys, 0, 0, "WITHSCORES")
        if #first == 0 then  -- no key has work left (cannot happen; heals a stray member)
          redis.call("ZREM", level, tenant)
          redis.call("HDEL", F, tfield)
        else
          local key, kpass = first[1], tonumber(first[2])
          local kfield = tfield .. ":" .. key
          local main = p == 3 and tenant == "" and key == ""
          local bucket = main and queue_full_name or (keys .. ":" .. key)
          local tw, kw = unpack(redis.call("HMGET", F, tfield, kfield))
          local id = redis.call("LPOP", bucket)
          if id then
            ids[#ids + 1] = id
            redis.call("SADD", queue_acks, id)
            if not main then redis.call("HINCRBY", F, "n", -1) end
          end
          if id and redis.call("EXISTS", bucket) == 1 then
            redis.call("ZADD", keys, kpass + 1 / (tonumber(kw) or 1), key)
          else
            redis.call("ZREM", keys, key)
            redis.call("HDEL", F, kfield)
          end
          if redis.call("EXISTS", keys) == 0 then
            redis.call("ZREM", level, tenant)
            redis.call("HDEL", F, tfield)
          elseif id then
            redis.call("ZADD", level, tpass + 1 / (tonumber(tw) or 1), tenant)
          end
        end
      end
    end
  end
  if #ids == 0 then return {} end
  if #ids == want
    and (redis.call("LLEN", queue_full_name) > 0 or tonumber(redis.call("HGET", F, "n") or 0) > 0)
  then
    local wake = queue_full_name .. ".wake"
    if redis.call("LLEN", wake) == 0 then redis.call("RPUSH", wake, 1) end
  end
  return redis.call("HMGET", queue_messages, unpack(ids))
end
