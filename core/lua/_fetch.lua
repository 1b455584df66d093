-- taskcast: priorities and fair share in Dramatiq's fetch. core/scripts.py inserts this chunk into
-- Dramatiq's own dispatch.lua, before its commands, so one script still heartbeats, maintains and
-- fetches; it uses that script's locals (queue_name, queue_full_name, queue_messages, queue_acks,
-- ARGS, max_unpack_size). While no task waits in a bucket (`place()` in _lib.lua) it does nothing
-- but one EXISTS, and Dramatiq's fetch pops the queue's list as before.
-- Otherwise it takes up to `prefetch` messages itself: priority 1 first; within a priority, the
-- tenant with the lowest pass, and within the tenant the key with the lowest pass; each advanced
-- by 1/weight for the message taken. The queue's own list (the default tenant's tasks of priority
-- 3 with no key, and what Dramatiq requeues there) is that level's bucket of tenant "" and key "".
if command == "fetch" and string.sub(queue_name, -3) ~= ".DQ" then
  local F = queue_full_name .. ".fair"
  local L = F .. "."
  if redis.call("EXISTS", L .. "1", L .. "2", L .. "3", L .. "4", L .. "5") > 0 then
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
    local want = math.min(tonumber(ARGS[1]), max_unpack_size)
    local ids = {}
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
    if #ids == 0 then return {} end
    return redis.call("HMGET", queue_messages, unpack(ids))
  end
end
