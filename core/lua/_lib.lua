-- Shared prelude, prepended to every taskcast script (see core/scripts.py).
-- ARGV[1] key prefix, ARGV[2] max events kept per task, ARGV[3] retention of finished tasks (s),
-- ARGV[4] Dramatiq namespace; script args follow.
-- Keys are built here from the prefix: like Dramatiq itself, taskcast needs one Redis, not a Cluster.
local P = ARGV[1]
local MAX_EVENTS = tonumber(ARGV[2])
local RETENTION = tonumber(ARGV[3])
local MQ = ARGV[4]
local A = {}
for i = 5, #ARGV do A[i - 4] = ARGV[i] end

-- Every time stored or compared (leases, stamps, retention) is Redis's own clock, in ms: hosts'
-- clocks drift, and a worker 20 s ahead once reaped every live attempt. Redis 7 replicates a
-- script's effects, not the script, so reading TIME before writing is allowed.
local CLOCK = redis.call("TIME")
local NOW = tonumber(CLOCK[1]) * 1000 + math.floor(tonumber(CLOCK[2]) / 1000)
local NOW_US = tonumber(CLOCK[1]) * 1000000 + tonumber(CLOCK[2])  -- exact in a double until 2255
-- Numbers given to redis.call are formatted with printf("%.17g") on every call, which was about
-- 5% of Redis's CPU in the task scripts (perf): the values written on every task go as text.
local function int(n) return string.format("%d", n) end
local NOW_S = int(NOW)
local RETENTION_S = ARGV[3]

local TERMINAL = {SUCCEEDED = true, FAILED = true, CANCELLED = true}

-- Whether `emit` publishes on the live channel; a script may turn it off for an event nobody can
-- be subscribed to yet (submit.lua: a task's first event, before anyone knows its id).
local LIVE = true

local function tkey(id) return P .. ":t:" .. id end

-- The prefix of a tenant's own keys (indexes, idempotency keys, per-kind statistics and run
-- times): the task hash's `tenant` field, absent for the default tenant, whose keys keep their
-- names from before tenants (the Lua side of Layout._scoped in core/layout.py).
local function scope(tenant)
  if not tenant or tenant == "" then return P end
  return P .. ":tn:" .. tenant
end

-- Whether some server watches task `id` now: `<p>:watched` scores each watched task with the time
-- (Redis ms) that interest lapses. A watch registers before it reads the stored events
-- (admit.lua, watch.lua) and its server renews it while the watch is open, so an event is either
-- stored before the watch read the stream or published to it. Publishing only then saves what
-- nobody reads: Redis formatting and sending every event, every server parsing and dropping it.
local function watched(id)
  local til = redis.call("ZSCORE", P .. ":watched", id)
  return til and tonumber(til) >= NOW
end

-- Append one event to the task's stream (its sequence is the stream id) and publish it live
-- when some server watches the task.
local function emit(id, fields)
  local seq = redis.call("HINCRBY", tkey(id), "seq", 1)
  table.insert(fields, "ts")
  table.insert(fields, tostring(NOW))
  redis.call("XADD", P .. ":e:" .. id, "MAXLEN", "~", MAX_EVENTS, seq .. "-0", unpack(fields))
  -- "<id> <seq> <fields as JSON>": servers route on the id before decoding anything
  if LIVE and watched(id) then
    redis.call("PUBLISH", P .. ":live", id .. " " .. seq .. " " .. cjson.encode(fields))
  end
  return seq
end

-- What move() needs of the task's hash, as a table built by one constructor (a table filled
-- field by field costs Redis more than the HMGET itself). A script that reads the hash anyway
-- reads these with its own fields and hands them over: a transition then costs no read.
local function move_fields(t)
  local kind, queue, created, ckey, wait, tenant, idem = unpack(
    redis.call("HMGET", t, "kind", "queue", "created", "ckey", "wait", "tenant", "idem"))
  return {kind = kind, queue = queue, created = created, ckey = ckey, wait = wait,
          tenant = tenant, idem = idem}
end

-- Move a task between states: its tenant's indexes and per-kind counts, per-queue running count.
-- Leaving RUNNING releases the attempt's concurrency share (`_limits.lua`); any move ends a wait
-- for a limit (the task started, or will never start from that wait).
-- `h`: the task's `move_fields` (`idem` only needed to end it), or nil to read them here. `sets`: more
-- fields (name, value, ...) for the hash, written in the same HSET as the new state, so a script
-- writes its task's hash once per transition (`submit` passes the whole new record).
local function move(id, from, to, h, sets)
  local t = tkey(id)
  h = h or move_fields(t)
  local S = scope(h.tenant)
  if from == "RUNNING" and h.ckey then redis.call("ZREM", P .. ":lim:c:" .. h.ckey, id) end
  if h.wait then
    redis.call("ZREM", P .. ":lim:w:" .. h.wait, id)
    redis.call("HDEL", t, "wait")
  end
  if from then redis.call("ZREM", S .. ":idx:state:" .. from, id) end
  redis.call("ZADD", S .. ":idx:state:" .. to, h.created, id)
  local stats = S .. ":stats:kind:" .. h.kind
  if from and not TERMINAL[from] then redis.call("HINCRBY", stats, from, "-1") end
  redis.call("HINCRBY", stats, to, "1")
  if from == "RUNNING" then redis.call("HINCRBY", P .. ":stats:running", h.queue, "-1") end
  if to == "RUNNING" then redis.call("HINCRBY", P .. ":stats:running", h.queue, "1") end
  sets = sets or {}
  table.insert(sets, "state")
  table.insert(sets, to)
  table.insert(sets, "updated")
  table.insert(sets, NOW_S)
  if TERMINAL[to] then
    table.insert(sets, "finished")
    table.insert(sets, NOW_S)
  end
  redis.call("HSET", t, unpack(sets))
  if from == "RUNNING" then redis.call("ZREM", P .. ":leases", id) end
  -- Finished tasks wait in `fin` (by finish time) until the compactor (compact.lua) folds their
  -- events into the hash; a task run again (RetryTask) leaves it, and returns when it ends.
  if from and TERMINAL[from] then redis.call("ZREM", P .. ":fin", id) end
  if TERMINAL[to] then
    redis.call("ZADD", P .. ":fin", NOW_S, id)
    redis.call("EXPIRE", t, RETENTION_S)
    redis.call("EXPIRE", P .. ":e:" .. id, RETENTION_S)
    if h.idem and h.idem ~= "" then redis.call("EXPIRE", S .. ":idem:" .. h.idem, RETENTION_S) end
  end
end

-- Dramatiq's Redis layout (the Lua side of core/mqlayout.py): a queue's list of message ids, its
-- hash of messages, and taskcast's wake-up list beside them.
local function mq_queue(queue) return MQ .. ":" .. queue end
local function mq_msgs(queue) return MQ .. ":" .. queue .. ".msgs" end
local function mq_wake(queue) return MQ .. ":" .. queue .. ".wake" end

-- Idle taskcast consumers block on a queue's wake-up list (worker/transport.py): drop a token
-- there. At most 64 wait: one per consumer that may be idle on the queue is plenty, and stale
-- tokens only cost empty fetches. The one rule for every enqueue, ours and Dramatiq's (wake.lua).
local function wake(queue)
  local list = mq_wake(queue)
  if redis.call("LLEN", list) < 64 then redis.call("RPUSH", list, 1) end
end

-- Priorities and fair share (docs/architecture.md, "Which task starts next"). A task with the
-- default priority (3), of the default tenant and with no fairness key waits on its queue's own
-- list, as Dramatiq's messages do. Any other waits in a bucket, a list per (priority, tenant,
-- fairness key), named in its hash's `fair` field, "<priority>\n<tenant>\n<key>\n<tenant
-- weight>\n<key weight>" (submit.lua). Per queue and priority, a sorted set ranks the tenants with
-- work by pass, and one per tenant ranks its keys; a fetch (`_fetch.lua`, run inside Dramatiq's
-- own fetch) takes the lowest pass of the highest priority and advances it by 1/weight: stride
-- scheduling, so each tenant, then each key within it, gets its weighted share of the starts.
-- A newcomer joins at the current lowest pass: no credit for idle time, no wait behind a backlog.
-- `<queue>.fair` holds how many messages wait in buckets ("n") and the weights other than 1.
local function mq_fair(queue) return MQ .. ":" .. queue .. ".fair" end

-- Add `member` to a pass ranking at its lowest pass, unless it is already there.
local function join(zset, member)
  if redis.call("ZSCORE", zset, member) then return end
  local first = redis.call("ZRANGE", zset, 0, 0, "WITHSCORES")
  redis.call("ZADD", zset, first[2] or 0, member)
end

-- Weights other than 1 are kept while the tenant or key has work: a field of `<queue>.fair`.
local function set_weight(F, field, w)
  if w == "" or tonumber(w) == 1 then redis.call("HDEL", F, field)
  else redis.call("HSET", F, field, w) end
end

-- Put message `rid` where it waits: its bucket when `fair` (a hash's `fair` field) names one, else
-- the queue's list; at the back, or at the front when `front` (a message handed back, that was
-- first); wake a consumer when the list was empty (a busy queue needs no token).
local function place(queue, rid, fair, front)
  local push = front and "LPUSH" or "RPUSH"
  local p, tenant, key, tw, kw
  if fair then
    p, tenant, key, tw, kw = string.match(fair, "^(%d)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$")
  end
  if not p or (p == "3" and tenant == "" and key == "") then
    if redis.call(push, mq_queue(queue), rid) == 1 then wake(queue) end
    return
  end
  local F = mq_fair(queue)
  local level = F .. "." .. p
  local keys = level .. "." .. tenant
  redis.call("HINCRBY", F, "n", 1)
  if redis.call(push, keys .. ":" .. key, rid) == 1 then
    join(keys, key)
    join(level, tenant)
    set_weight(F, "w" .. p .. "." .. tenant, tw)
    set_weight(F, "w" .. p .. "." .. tenant .. ":" .. key, kw)
    wake(queue)
  end
end

-- Put an encoded Dramatiq message for task `id` on a queue as RedisBroker.enqueue does (a live
-- queue's message in the task's bucket, `place`), and wake a consumer when it waited alone.
-- The task remembers where its message went, so a cancel can take it back.
-- A delay given relative (core/mqlayout.py encodes it as a negative eta) becomes NOW + delay.
-- `fair`: the task's `fair` field ("" for none) when the caller wrote the task's `mq` and `rid`
-- itself (`submit`, in its one write of the new hash); nil to read the one and write the others.
local function enqueue(id, queue, rid, data, fair)
  local delayed = string.sub(queue, -3) == ".DQ"
  if delayed then  -- only a delayed message has an eta (core/mqlayout.py `encode`)
    data = string.gsub(data, '"eta":%-(%d+)', function(d)
      return '"eta":' .. string.format("%d", NOW + tonumber(d))
    end, 1)
  end
  local t = tkey(id)
  if fair == nil then
    redis.call("HSET", t, "mq", queue, "rid", rid)
    fair = redis.call("HGET", t, "fair")
  end
  redis.call("HSET", mq_msgs(queue), rid, data)
  if delayed then
    if redis.call("RPUSH", mq_queue(queue), rid) == 1 then wake(queue) end
  else
    place(queue, rid, fair ~= "" and fair)
  end
end
