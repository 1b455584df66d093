-- A: id, tenant ("" for the default one), after (a sequence), interest (ms), count.
-- A WatchTask's admission in one round trip (server/watch.py): the owner checked, this server's
-- interest in the task's live events registered until NOW + interest (`watched` in _lib.lua),
-- then up to `count` stored events after `after`, read after the registration and in the same
-- script: every event is in this reply or published to the watcher (or both: the watch drops
-- what it has sent). The registration is made only for a task the caller may watch.
-- Returns {} when the task is unknown, expired or another tenant's; else {seq, state, compacted
-- ("1": the hash keeps its terminal event as `tail`, its stream is gone), XRANGE's entries}.
local id, tenant, after, ttl, count = unpack(A, 1, 5)
local seq, state, owner, tail = unpack(
  redis.call("HMGET", tkey(id), "seq", "state", "tenant", "tail"))
if not state or (owner or "") ~= tenant then return {} end
redis.call("ZADD", P .. ":watched", "GT", NOW + tonumber(ttl), id)
seq = seq or "0"
local entries = {}
if tonumber(after) < tonumber(seq) and not tail then
  entries = redis.call("XRANGE", P .. ":e:" .. id, "(" .. after .. "-0", "+", "COUNT", count)
end
return {seq, state, tail and "1" or "0", entries}
