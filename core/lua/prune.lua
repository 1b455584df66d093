-- A: index (a sorted set of task ids scored by creation time), start rank, count, then for a
-- kind or label index the set that lists it ("" otherwise) and its member there.
-- Checks `count` entries created before NOW - retention (only those can belong to an expired
-- task), from `start`, and drops those whose task is gone. An index left empty leaves its set
-- too, in the same step, so the kind and label sets shrink with the tasks: a submit that adds
-- to the index adds to the set again (submit.lua), and no submit can land in between.
-- Returns {entries checked, entries dropped}.
local index, start, count, set, member = A[1], tonumber(A[2]), tonumber(A[3]), A[4], A[5]
local ids = redis.call("ZRANGEBYSCORE", index, 0, NOW - RETENTION * 1000, "LIMIT", start, count)
local gone = {}
for _, id in ipairs(ids) do
  if redis.call("EXISTS", tkey(id)) == 0 then table.insert(gone, id) end
end
if #gone > 0 then redis.call("ZREM", index, unpack(gone)) end
if set ~= "" and redis.call("EXISTS", index) == 0 then redis.call("SREM", set, member) end
return {#ids, #gone}
