-- A: id, kind, queue, payload, labels_json, max_attempts, not_before (ms, the client's clock),
--    delay (ms from now), timeout_ms, idempotency key, fingerprint, mq queue (Q or Q.DQ),
--    message id, message data, traceparent ("" for none), live ("1": publish the PENDING event,
--    "0": store it only), tenant ("" for the default one), concurrency key, concurrency limit,
--    rate key, rate count, rate period (ms) (""/0: none; see _limits.lua), the `fair` field ("":
--    priority 3, the default tenant, no fairness key: see `place()` in _lib.lua), label keys...
-- A watch can only start once its caller has the id this script's reply carries, and then
-- replays the stored PENDING event; a group watch finds new tasks in the label index. So the
-- live publish of this first event is only ever read to be ignored: a batch ("0") skips it.
-- Returns {1, id, created, not_before} when created, {0, existing id, existing fingerprint} for a
-- known key, or for this very call run again (redis-py retrying after a lost reply: the id is new
-- on every call).
local id, kind, queue, payload, labels, max_attempts, not_before, delay_ms, timeout_ms,
      idem, fp, mq_queue, rid, data, trace, live, tenant, ckey, climit, rkey, rcount, rperiod,
      fair = unpack(A, 1, 23)
LIVE = live ~= "0"
local S = scope(tenant)
if tonumber(delay_ms) > 0 then not_before = int(NOW + tonumber(delay_ms)) end
-- This very call run again finds its own task: through its key when it has one (the key lives
-- as long as the task: both are given the retention together, move(), and kept together,
-- retry.lua), else through the task's hash.
if idem ~= "" then
  local existing = redis.call("GET", S .. ":idem:" .. idem)
  if existing then
    local sep = string.find(existing, "|", 1, true)
    return {0, string.sub(existing, 1, sep - 1), string.sub(existing, sep + 1)}
  end
  redis.call("SET", S .. ":idem:" .. idem, id .. "|" .. fp)
else
  local again = redis.call("HGET", tkey(id), "fp")
  if again then return {0, id, again} end
end
-- The whole record in one write, with its state (move()) and where its message goes (enqueue()).
local record = {"id", id, "kind", kind, "queue", queue, "payload", payload, "labels", labels,
  "attempt", "0", "max_attempts", max_attempts, "created", NOW_S, "not_before", not_before,
  "timeout_ms", timeout_ms, "idem", idem, "fp", fp, "seq", "0", "mq", mq_queue, "rid", rid}
local function also(...) for _, v in ipairs({...}) do table.insert(record, v) end end
if trace ~= "" then also("trace", trace) end
if ckey ~= "" then also("ckey", ckey, "climit", climit) end
if rkey ~= "" then also("rkey", rkey, "rcount", rcount, "rperiod", rperiod) end
if fair ~= "" then also("fair", fair) end
if tenant ~= "" then  -- the default tenant's tasks have no field, as before tenants
  also("tenant", tenant)
  redis.call("SADD", P .. ":tenants", tenant)
end
redis.call("ZADD", S .. ":idx:all", NOW_S, id)
redis.call("ZADD", S .. ":idx:kind:" .. kind, NOW_S, id)
redis.call("SADD", S .. ":idx:kinds", kind)
for i = 24, #A do
  redis.call("ZADD", S .. ":idx:label:" .. A[i], NOW_S, id)
  redis.call("SADD", S .. ":idx:labels", A[i])
end
-- A new task waits for no limit and its idempotency key expires only when it ends (move()).
move(id, nil, "PENDING", {kind = kind, queue = queue, created = NOW_S, ckey = ckey ~= "" and ckey,
  tenant = tenant}, record)
emit(id, {"type", "state", "state", "PENDING", "attempt", "0"})
enqueue(id, mq_queue, rid, data, fair)
return {1, id, NOW, tonumber(not_before)}
