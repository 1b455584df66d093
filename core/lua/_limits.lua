-- Per-key limits, checked by `begin` before an attempt starts (so a held-back task is no attempt:
-- no attempt number, no lease, no slot). Prepended to begin.lua after _lib.lua (core/scripts.py).
--
-- Concurrency: a sorted set per key (P:lim:c:<key>) of task ids scored by lease end. Expired
-- members are dropped first, so a killed worker's shares come back within the lease time with no
-- reaper; leases renew them (renew.lua) and leaving RUNNING releases them (move() in _lib.lua).
--
-- Rate, N per period: starts are spaced by step = period / N, and a sliding log per key
-- (P:lim:r:<key>, the admission times within the last period) is the hard bound: a start is
-- admitted only while fewer than N were admitted within the period before NOW, so NO window of
-- that length ever holds more than N starts, across all workers, whatever the timing. The pacing
-- (P:lim:n:<key>, the next free turn) keeps starts smooth (no burst of N, then a pause) and hands
-- each refused task its own turn, so waiters come back one per step, not all at once. A task
-- back at its turn starts as soon as the log has room, before tasks without a turn; one that
-- comes back late does not push the turns after it (the log lets them catch up within N per
-- period), and one whose log is still full waits exactly until the oldest start leaves it.
--
-- Tokens, N per period (core/limits.py `Tokens`): a log per key (P:lim:t:<key>) of the attempts
-- started within the last period, scored by start, each member "<id>:<attempt>:<tokens>": its
-- reservation until its finish replaces that with the usage the handler reported (`debit`), and
-- the log's sum beside it (P:lim:ts:<key>), kept as entries come and go: a budget on a kind that
-- starts hundreds of attempts a second has tens of thousands of entries a minute, too many to
-- add up on every start. An attempt starts only while the sum plus its own reservation fits N.
-- Usage counts at the attempt's start, when the provider sees the request.

-- Remember a key for GetStats (P:lim:keys, "c:<key>" -> "<limit>", "r:<key>" -> "<N> <period>",
-- "t:<key>" -> "<N> <period>");
-- limits.lua forgets it once nothing runs, waits or counts under it.
local function note_key(field, limit, rperiod)
  local value = tostring(limit)
  if string.sub(field, 1, 1) ~= "c" then value = value .. " " .. tostring(rperiod) end
  redis.call("HSET", P .. ":lim:keys", field, value)
end

local function tokens_of(member) return tonumber(string.match(member, ":(%d+)$")) end

-- The tokens a key's log counts now, dropping (and taking off the sum) what left the window,
-- and its oldest start (nil: empty, and the sum is reset with it).
local function tokens_used(key, period)
  local log, total = P .. ":lim:t:" .. key, P .. ":lim:ts:" .. key
  local gone = redis.call("ZRANGEBYSCORE", log, "-inf", NOW - period)
  if #gone > 0 then
    local sum = 0
    for _, member in ipairs(gone) do sum = sum + tokens_of(member) end
    redis.call("ZREMRANGEBYSCORE", log, "-inf", NOW - period)
    redis.call("DECRBY", total, sum)
  end
  local oldest = redis.call("ZRANGE", log, 0, 0, "WITHSCORES")[2]
  if not oldest then
    redis.call("DEL", total)
    return 0, nil
  end
  return tonumber(redis.call("GET", total) or "0"), tonumber(oldest)
end

-- Whether a token budget {key, budget, period, reserve} refuses an attempt now: nil, or the
-- refusal. Its wait: until the oldest start leaves the window when every entry is a debit;
-- 0 (back off) while one is a reservation that its finish may shrink.
local function tokens_refuse(tk)
  local used, oldest = tokens_used(tk[1], tk[3])
  if used + tk[4] <= tk[2] then return nil end
  local open = P .. ":lim:tr:" .. tk[1]
  redis.call("ZREMRANGEBYSCORE", open, "-inf", NOW - tk[3])
  local wait = 0
  if redis.call("ZCARD", open) == 0 and oldest then wait = math.max(1, oldest + tk[3] - NOW) end
  return {"tokens", tk[1], tk[2], wait, 0}
end

-- Admit attempt `attempt` of task `id` under its limits; nil when admitted (the shares are
-- taken), else {reason, key, limit, wait_ms, turn}. `tk`: the worker's token budget or nil.
local function admit(id, attempt, lease_ms, turn, ckey, climit, rkey, rcount, rperiod, tk)
  local step = rkey and rperiod * 1000 / rcount  -- in microseconds: 300/s is 3333 us, not 4 ms
  local running = ckey and (P .. ":lim:c:" .. ckey)
  if ckey then
    redis.call("ZREMRANGEBYSCORE", running, "-inf", NOW)
    if not redis.call("ZSCORE", running, id) and redis.call("ZCARD", running) >= climit then
      return {"concurrency", ckey, climit, 0, turn}
    end
  end
  local log = rkey and (P .. ":lim:r:" .. rkey)
  if rkey then
    -- A turn is kept from `lead` before it: a waiter is sent back that much early, to make up
    -- for the trip through the delay queue to a worker (~10-50 ms). Arriving late, it would make
    -- every start after it late too: the log admits the start N later no earlier than a period
    -- after it.
    local lead = math.min(math.floor(step / 2000), 30)
    if turn - lead > NOW then return {"rate", rkey, rcount, turn - lead - NOW, turn} end
    redis.call("ZREMRANGEBYSCORE", log, "-inf", NOW - rperiod)
    local count = redis.call("ZCARD", log)
    local pointer = P .. ":lim:n:" .. rkey
    local nxt = tonumber(redis.call("GET", pointer) or "0")  -- the next free turn, in us
    if count >= rcount or (turn == 0 and nxt > NOW_US) then
      local free_at = NOW
      if count >= rcount then
        free_at = tonumber(redis.call("ZRANGE", log, 0, 0, "WITHSCORES")[2]) + rperiod
      end
      if turn > 0 then return {"rate", rkey, rcount, free_at - NOW, turn} end
      local at = math.max(nxt, free_at * 1000)
      local after = math.ceil(at + step)
      redis.call("SET", pointer, string.format("%d", after),
                 "PX", math.ceil(after / 1000) - NOW + rperiod)
      at = math.ceil(at / 1000)
      return {"rate", rkey, rcount, math.max(1, at - lead - NOW), at}
    end
  end
  local refused = tk and tokens_refuse(tk)
  if refused then return refused end
  if ckey then
    redis.call("ZADD", running, NOW + lease_ms, id)
    note_key("c:" .. ckey, climit)
  end
  if rkey then
    redis.call("ZADD", log, NOW, id .. ":" .. attempt)
    redis.call("PEXPIRE", log, rperiod * 2)
    if turn == 0 then  -- a start without a turn takes the current one: the next is a step on
      redis.call("SET", P .. ":lim:n:" .. rkey, string.format("%d", math.ceil(NOW_US + step)),
                 "PX", math.ceil(step / 1000) + rperiod)
    end
    note_key("r:" .. rkey, rcount, rperiod)
  end
  if tk then
    local log, total = P .. ":lim:t:" .. tk[1], P .. ":lim:ts:" .. tk[1]
    local member = id .. ":" .. attempt
    redis.call("ZADD", log, NOW, member .. ":" .. tk[4])
    redis.call("INCRBY", total, tk[4])
    redis.call("PEXPIRE", log, tk[3] * 2)
    redis.call("PEXPIRE", total, tk[3] * 2)  -- the same deadline as the log's
    -- The reservations not yet replaced by usage, by start: what `tokens_refuse` asks about (a
    -- lost attempt's stays until it leaves the window).
    redis.call("ZADD", P .. ":lim:tr:" .. tk[1], NOW, member)
    redis.call("PEXPIRE", P .. ":lim:tr:" .. tk[1], tk[3] * 2)
    redis.call("HSET", tkey(id), "tok", tk[1], "tok_res", tk[4])
    note_key("t:" .. tk[1], tk[2], tk[3])
  end
  return nil
end

-- Replace attempt `attempt`'s reservation with the `used` tokens its handler reported
-- (`finish`; -1: not reported, the reservation stays the debit); nothing when the task started
-- no attempt under a token budget, or the start has left the window.
-- `key` and `res` are the hash's `tok` and `tok_res` (finish.lua reads them with its own fields).
local function debit(id, attempt, used, key, res)
  if not key then return end
  local log, member = P .. ":lim:t:" .. key, id .. ":" .. attempt
  redis.call("ZREM", P .. ":lim:tr:" .. key, member)
  if used < 0 then return end
  local at = redis.call("ZSCORE", log, member .. ":" .. res)
  if at then
    redis.call("ZREM", log, member .. ":" .. res)
    redis.call("ZADD", log, at, member .. ":" .. used)
    redis.call("INCRBY", P .. ":lim:ts:" .. key, used - tonumber(res))
  end
end

-- The task starts waiting for a limit: one Waiting event per wait (not one per try), and the
-- task is counted among the key's waiters (P:lim:w:<c|r|t>:<key>) until move() ends the wait.
local function waiting(id, attempt, refused, rperiod)
  local reason, key, limit = refused[1], refused[2], refused[3]
  local w = string.sub(reason, 1, 1) .. ":" .. key
  local t = tkey(id)
  local was = redis.call("HGET", t, "wait")
  if was == w then return end
  if was then redis.call("ZREM", P .. ":lim:w:" .. was, id) end
  redis.call("HSET", t, "wait", w)
  redis.call("ZADD", P .. ":lim:w:" .. w, NOW, id)
  note_key(w, limit, rperiod)
  if reason == "tokens" then  -- the task record stores no token budget: GetTask's Waiting
    redis.call("HSET", t, "tok_limit", limit, "tok_period", rperiod)
  end
  local fields = {"type", "waiting", "attempt", tostring(attempt), "reason", reason, "key", key,
                  "limit", tostring(limit)}
  if reason ~= "concurrency" then
    table.insert(fields, "period")
    table.insert(fields, tostring(rperiod))
  end
  emit(id, fields)
end
