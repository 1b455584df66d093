"""Finished tasks in bulk, for RedriveTasks: select them by a filter and snapshot their ids.

Selection walks one of the tenant's indexes (the state indexes, or the kind's or a label's when
it is smaller), oldest first, 1,000 entries a round trip, and checks each task's record against
the whole filter. It examines at most `MAX_SCANNED` entries per index, so one request's cost is
bounded.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from taskcast.core.calls import REDRIVE_KIND
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.records import TaskError
from taskcast.core.states import State

if TYPE_CHECKING:
    from taskcast.server.store import ServerStore

PAGE = 1000
MAX_SCANNED = 1_000_000  # index entries examined per index (about 5 s of Redis time)
FIELDS = ("state", "kind", "labels", "error", "finished")


@dataclass(frozen=True)
class Filter:
    """What selects a task: every field given must match (times in Redis ms, 0: unbounded)."""

    states: tuple[State, ...]
    kind: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    error_type: str = ""
    after_ms: int = 0
    before_ms: int = 0
    tenant: str = DEFAULT_TENANT  # whose indexes are walked: only its tasks are ever selected


@dataclass(frozen=True)
class Selection:
    """The selected ids, oldest first, and whether more matched than were taken."""

    ids: list[str]
    truncated: bool


async def idempotent(store: ServerStore, key: str, tenant: str) -> tuple[str, str] | None:
    """The (task id, fingerprint) `tenant`'s idempotency key points to, if any."""
    raw = cast("bytes | None", await store.client.get(store.layout.of(tenant).idempotency(key)))
    if raw is None:
        return None
    task_id, _, digest = raw.decode().partition("|")
    return task_id, digest


async def select(store: ServerStore, f: Filter, limit: int) -> Selection:
    """Up to `limit` matching ids, oldest (by creation) first; truncated when more matched or
    the scan stopped at its bound."""
    found: list[list[tuple[float, str]]] = []
    truncated = False
    for index in await _indexes(store, f):
        matches, cut = await _scan(store, index, f, limit)
        found.append(matches)
        truncated = truncated or cut
    merged = list(heapq.merge(*found))
    if len(merged) > limit:
        merged, truncated = merged[:limit], True
    return Selection([task_id for _, task_id in merged], truncated)


async def _indexes(store: ServerStore, f: Filter) -> list[str]:
    """The indexes to walk (the filter's tenant's): the state indexes, or one kind or label index
    if it is smaller."""
    layout = store.layout.of(f.tenant)
    by_state = [layout.index_state(s.value) for s in f.states]
    others = [layout.index_kind(f.kind)] if f.kind else []
    others += [layout.index_label(layout.label_member(k, v)) for k, v in f.labels.items()]
    async with store.client.pipeline(transaction=False) as pipe:
        for key in (*by_state, *others):
            pipe.zcard(key)
        sizes = [int(n) for n in await pipe.execute()]
    states_size = sum(sizes[: len(by_state)])
    smallest = min(zip(sizes[len(by_state) :], others, strict=True), default=None)
    if smallest is not None and smallest[0] < states_size:
        return [smallest[1]]
    return by_state


async def _scan(
    store: ServerStore, index: str, f: Filter, limit: int
) -> tuple[list[tuple[float, str]], bool]:
    """Matches in one index, oldest first: up to limit + 1 (so truncation shows)."""
    matches: list[tuple[float, str]] = []
    for start in range(0, MAX_SCANNED, PAGE):
        rows = cast(
            "list[tuple[bytes, float]]",
            await store.client.zrange(index, start, start + PAGE - 1, withscores=True),
        )
        async with store.client.pipeline(transaction=False) as pipe:
            for member, _ in rows:
                pipe.hmget(store.layout.task(member.decode()), *FIELDS)
            records = await pipe.execute()
        for (member, score), values in zip(rows, records, strict=True):
            if _matches(values, f):
                matches.append((score, member.decode()))
                if len(matches) > limit:
                    return matches, True
        if len(rows) < PAGE:
            return matches, False
    return matches, True


def _matches(values: list[bytes | None], f: Filter) -> bool:
    state, kind, labels, error, finished = (v.decode() if v else "" for v in values)
    if state not in {s.value for s in f.states} or (f.kind and kind != f.kind):
        return False
    if kind == REDRIVE_KIND and f.kind != REDRIVE_KIND:
        return False  # a cancelled operation is resumed only when asked for by its kind
    if f.labels and not f.labels.items() <= json.loads(labels or "{}").items():
        return False
    done = int(finished or 0)
    if (f.after_ms and done < f.after_ms) or (f.before_ms and done >= f.before_ms):
        return False
    if f.error_type:
        err = TaskError.from_json(error)
        return err is not None and err.type == f.error_type
    return True


async def snapshot(store: ServerStore, op_id: str, ids: list[str]) -> None:
    """Write an operation's ids and its progress hash (cursor 0), both kept for the retention:
    the worker drops the list when the operation ends."""
    layout = store.layout
    ttl = layout.retention_s
    async with store.client.pipeline(transaction=True) as pipe:
        for start in range(0, len(ids), PAGE):
            pipe.rpush(layout.redrive_ids(op_id), *ids[start : start + PAGE])
        pipe.expire(layout.redrive_ids(op_id), ttl)
        pipe.hset(
            layout.redrive(op_id),
            mapping={"total": len(ids), "cursor": 0, "retried": 0, "skipped": 0},
        )
        pipe.expire(layout.redrive(op_id), ttl)
        await pipe.execute()


async def drop_snapshot(store: ServerStore, op_id: str) -> None:
    """Forget a snapshot whose operation was never recorded."""
    await store.client.delete(store.layout.redrive_ids(op_id), store.layout.redrive(op_id))
