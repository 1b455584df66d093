"""The server's side of the Redis model: submit, read, cancel, retry, list, count. Asyncio only.

Every call is made for one tenant. A task is read or changed by id only through `owned`, which
answers NotFound for another tenant's task exactly as for an unknown id; lists and counts read
the tenant's own keys (`Layout.of`).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from taskcast.core import calls, mqlayout, redisurl, scripts
from taskcast.core.calls import Call, NewTask
from taskcast.core.capacity import LIVE_MS, WorkerRecord
from taskcast.core.kinds import KindInfo
from taskcast.core.layout import DEFAULT_TENANT, Layout
from taskcast.core.records import EventRecord, TaskRecord
from taskcast.core.scripts import redis_ms
from taskcast.core.states import ACTIVE, TERMINAL, State
from taskcast.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ServiceError,
    Unavailable,
    translate,
)
from taskcast.server.stats import KindFigures, QueueFigures

POOL_SIZE = 64  # connections per server process; commands beyond wait for one
# Run times per kind GetStats reads: `finish` keeps 1,000 to 1,100 (it trims once per 100).
RUN_TIMES = 1000
# What a list item needs from the task hash: everything but the two large fields.
SUMMARY_FIELDS = (
    "id", "kind", "queue", "state", "labels", "attempt", "max_attempts", "created", "updated",
    "started", "finished", "not_before", "timeout_ms", "error", "seq", "idem", "cancel",
    "pfrac", "pmsg", "ttfo", "tenant",
)  # fmt: skip
# Upper bounds of what protobuf adds to a Task's strings: each of its 10 strings costs at most a
# tag and a 5-byte length; 5 Timestamps (14 bytes each), 2 Durations, the ints, Progress and the
# list entry's own tag and length come to under 200. A label costs its text plus at most 18.
TASK_OVERHEAD, LABEL_OVERHEAD, PAGE_OVERHEAD = 256, 18, 128


def connect(url: str) -> aredis.Redis:
    """A client that fails fast: a Redis that is down (connection refused) is UNAVAILABLE in
    milliseconds, one that does not answer within 2 s; one quick retry covers a pooled connection
    that a Redis restart closed. The server sends no blocking commands.

    The pool blocks (up to 5 s) for a free connection: redis-py's default pool raises "Too many
    connections" past 100 commands in flight, which turned bursts of watch streams into errors.
    """
    return redisurl.async_client(
        url,
        pool_size=POOL_SIZE,
        pool_timeout=5,
        socket_connect_timeout=0.5,
        socket_timeout=2,
        health_check_interval=10,
        retry=Retry(
            ExponentialWithJitterBackoff(cap=0.1, base=0.01),
            1,
            supported_errors=(RedisConnectionError,),  # a timeout is not worth a second wait
        ),
        retry_on_error=[RedisConnectionError],
    )


class ServerStore:
    """Asynchronous access to tasks and events for the gRPC handlers."""

    def __init__(
        self,
        client: aredis.Redis,
        layout: Layout,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        # redis-py types its replies as unions over sync/async and bytes/str: they are cast or
        # decoded where they are read.
        self.client = client
        self.layout = layout
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._scripts = scripts.register(client)
        self._kinds: dict[str, KindInfo] = {}
        self._kinds_read = 0.0

    async def _run(self, call: Call) -> Any:
        return await self._scripts[call.script](keys=call.keys, args=call.args)

    async def _run_replicated(self, call: Call) -> Any:
        """Run `call`, then WAIT until `wait_replicas` replicas have it; Unavailable if fewer do.

        WAIT covers the writes of the connection it is sent on, so both go in one pipeline (one
        connection, one round trip). A primary new after a failover may not have the script
        cached yet: NOSCRIPT loads it and the call is sent again (it wrote nothing).
        """
        script = self._scripts[call.script]
        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
                pipe.wait(self.wait_replicas, self.wait_timeout_ms)
                reply, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):
                await self.client.script_load(script.script)
                continue
            if isinstance(reply, Exception):
                raise reply
            self._check_confirmed(confirmed)
            return reply
        raise Unavailable("task store (Redis) lost its scripts twice in a row; retry")

    async def kinds(self, *, refresh: bool = False) -> dict[str, KindInfo]:
        """Kinds workers registered; re-read at most once a second, or when asked to."""
        if not self._kinds_read or (refresh and time.monotonic() - self._kinds_read > 1.0):
            raw = cast("dict[bytes, bytes]", await self.client.hgetall(self.layout.kinds()))
            self._kinds = {k.decode(): KindInfo.from_json(v) for k, v in raw.items()}
            self._kinds_read = time.monotonic()
        return self._kinds

    async def now(self) -> int:
        """Redis's clock in epoch ms (the clock every stored time is on)."""
        return redis_ms(await self.client.time())

    async def submit(self, task_id: str, new: NewTask) -> tuple[TaskRecord, bool]:
        """Record the task, its PENDING event and its first message in one step.

        Returns the task and whether it was created (False: an idempotent resubmission).
        """
        call = calls.submit(self.layout, task_id, new)
        # A resubmission waits too: the first answer may have been UNAVAILABLE for want of
        # replicas, and this one must not acknowledge what only the primary holds.
        reply = await (self._run_replicated(call) if self.wait_replicas else self._run(call))
        done = calls.submit_reply(reply)
        if not done.created and done.fingerprint != new.fingerprint:
            raise _reused(new, done.task_id)
        if done.created:  # what the script just wrote (its times are Redis's), without reading
            return _fresh(task_id, new, done.created_ms, done.not_before_ms), True
        return await self.get(done.task_id, new.tenant), done.task_id == task_id

    async def submit_many(
        self, items: list[tuple[str, NewTask]]
    ) -> list[tuple[TaskRecord, bool] | ServiceError]:
        """`submit` for many tasks in one pipeline (one round trip, each script atomic on its own):
        per item, the task and whether it was created, or its own error (AlreadyExists, or a
        Redis error on that item alone). Items run in order, so an item repeating an earlier
        item's idempotency key finds that task.

        Raises:
            RedisError: The pipeline as a whole failed (Redis down): nothing is known of any item.
            Unavailable: Fewer than `wait_replicas` replicas confirmed the writes.
        """
        # live=False: nobody can watch these tasks before this reply names them (submit.lua).
        replies = await self._run_many(
            [calls.submit(self.layout, task_id, new, live=False) for task_id, new in items]
        )
        out: list[tuple[TaskRecord, bool] | ServiceError] = []
        found: dict[int, str] = {}  # item index -> the existing task it repeats
        for i, ((task_id, new), reply) in enumerate(zip(items, replies, strict=True)):
            if isinstance(reply, Exception):
                out.append(translate(reply))
                continue
            done = calls.submit_reply(reply)
            if done.created:
                out.append((_fresh(task_id, new, done.created_ms, done.not_before_ms), True))
            elif done.fingerprint != new.fingerprint:
                out.append(_reused(new, done.task_id))
            else:
                out.append(NotFound(done.task_id))  # until the task is read, below
                found[i] = done.task_id
        if found:
            for i, record in zip(found, await self._records(list(found.values())), strict=True):
                task_id = items[i][0]
                out[i] = NotFound(found[i]) if record is None else (record, found[i] == task_id)
        return out

    async def _run_many(self, many: list[Call], *, replicated: bool = True) -> list[Any]:
        """Each call's reply (or its error) from one pipeline, then WAIT when replicas are asked
        for (and `replicated`). Calls that met NOSCRIPT (a primary new after a failover) wrote
        nothing: the script is loaded and they are sent once more."""
        replies: list[Any] = [None] * len(many)
        todo = list(range(len(many)))
        confirmed: Any = None
        wait = self.wait_replicas if replicated else 0
        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                for i in todo:
                    script = self._scripts[many[i].script]
                    pipe.evalsha(script.sha, len(many[i].keys), *many[i].keys, *many[i].args)
                if wait:
                    pipe.wait(wait, self.wait_timeout_ms)
                got = await pipe.execute(raise_on_error=False)
            if wait:
                confirmed = got.pop()  # judged once the calls that met NOSCRIPT ran again
            for i, reply in zip(todo, got, strict=True):
                replies[i] = reply
            todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
            if not todo:
                break
            for name in {many[i].script for i in todo}:
                await self.client.script_load(self._scripts[name].script)
        if wait:
            self._check_confirmed(confirmed)
        return replies

    def _check_confirmed(self, confirmed: Any) -> None:
        if isinstance(confirmed, Exception):
            raise confirmed
        if int(confirmed) < self.wait_replicas:
            raise Unavailable(
                f"task store (Redis): {confirmed} of {self.wait_replicas} replicas confirmed "
                f"the submit within {self.wait_timeout_ms} ms; retry with the same "
                "idempotency key"
            )

    async def _records(self, task_ids: list[str]) -> list[TaskRecord | None]:
        """Whole tasks in one pipeline; None for each one unknown or expired."""
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.layout.task(task_id))
            raws = await pipe.execute()
        return [TaskRecord.from_hash(raw) if raw else None for raw in raws]

    async def owned(
        self, task_id: str, tenant: str, fields: tuple[str, ...] | None = None
    ) -> dict[bytes, bytes]:
        """The one way to a task by id: its hash (whole, or just `fields`) when it belongs to
        `tenant`. NotFound when it is unknown, expired, or another tenant's: the same answer, so
        an id tells a caller nothing about other tenants (ids are random, and this is the only
        check). A task's tenant never changes, so a check before a script is as good as one in
        it. Every RPC that takes a task id goes through here (or `get`) first.

        Raises:
            NotFound: unknown, expired, or another tenant's task.
        """
        key = self.layout.task(task_id)
        if fields is None:
            raw = cast("dict[bytes, bytes]", await self.client.hgetall(key))
        else:
            names = (*fields, "tenant", "state")  # every stored task has a state
            values = cast("list[bytes | None]", await self.client.hmget(key, *names))
            raw = {n.encode(): v for n, v in zip(names, values, strict=True) if v is not None}
        owner = raw.get(b"tenant")
        if not raw or (owner.decode() if owner else DEFAULT_TENANT) != tenant:
            raise NotFound(task_id)
        return raw

    async def get(self, task_id: str, tenant: str) -> TaskRecord:
        """One task of `tenant`; NotFound when unknown, expired or another tenant's."""
        return TaskRecord.from_hash(await self.owned(task_id, tenant))

    async def cancel(self, task_id: str, reason: str, tenant: str) -> TaskRecord:
        """Cancel now (PENDING, RETRYING) or ask the running attempt to stop."""
        await self.owned(task_id, tenant, ())
        done = calls.cancel_reply(await self._run(calls.cancel(self.layout, task_id, reason)))
        if done.result is calls.CancelResult.MISSING:
            raise NotFound(task_id)
        if done.finished is not None:
            raise FailedPrecondition(
                f"task {task_id} already finished ({done.finished.value}); nothing to cancel",
                subject=f"taskcast.v1.Task/{task_id}",
            )
        return await self.get(task_id, tenant)

    async def retry(self, task_id: str, request_id: str, tenant: str) -> tuple[TaskRecord, bool]:
        """Run a FAILED or CANCELLED task again (`retry.lua`); whether this call retried it.

        A call whose `request_id` retried the task last answers the task as it is, retried False.

        Raises:
            NotFound: Unknown or expired id, or another tenant's task.
            FailedPrecondition: The task is not FAILED or CANCELLED.
        """
        for _ in range(3):  # "moved": the task changed between the read and the script
            raw = await self.owned(task_id, tenant, calls.RETRY_FIELDS)
            fields = [raw[f.encode()] for f in calls.RETRY_FIELDS]
            call = calls.retry(self.layout, task_id, request_id, fields)
            done = calls.retry_reply(await self._run(call))
            if done.result is calls.RetryResult.MISSING:
                raise NotFound(task_id)
            if done.state is not None:
                raise FailedPrecondition(
                    f"task {task_id} is {done.state.value}; only a FAILED or CANCELLED task "
                    "can be retried",
                    subject=f"taskcast.v1.Task/{task_id}",
                )
            if done.task is not None:
                return done.task, done.result is calls.RetryResult.RETRIED
        raise Unavailable(f"task {task_id} kept changing while it was being retried; retry")

    async def watch_token_key(self) -> bytes:
        """The deployment's watch-token key: made once by whichever server asks first (SET NX
        of 32 random bytes), then the same for every server."""
        key, mine = self.layout.watch_token_key(), secrets.token_bytes(32)
        # Two commands, not SET NX GET: that needs Redis 7, and this runs once per process.
        if await self.client.set(key, mine, nx=True):
            return mine
        return cast("bytes | None", await self.client.get(key)) or mine

    async def mark(self, task_id: str) -> tuple[State, int] | None:
        """The task's state and newest event's sequence, or None when the task is gone.

        For a watch already admitted (`get` checked the tenant): no tenant check here."""
        reply = await self.client.hmget(self.layout.task(task_id), "state", "seq")
        state, seq = cast("list[bytes | None]", reply)
        return None if state is None else (State(state.decode()), int(seq or 0))

    async def admit(
        self, task_id: str, tenant: str, after: int, interest_ms: int, count: int = 500
    ) -> calls.Admission:
        """A WatchTask's start in one round trip (admit.lua): the owner checked like `owned`,
        interest in the task's live events registered, then the first `count` events after
        `after`.

        Raises:
            NotFound: unknown, expired, or another tenant's task.
        """
        call = calls.admit(self.layout, task_id, tenant, after, interest_ms, count)
        admission = calls.admit_reply(task_id, await self._run(call), after, count)
        if admission is None:
            raise NotFound(task_id)
        return admission

    async def watch(
        self, task_ids: list[str], interest_ms: int, *, marks: bool = False
    ) -> list[tuple[State, int] | None]:
        """Register or renew interest in these tasks' live events (one pipeline, 1,000 ids per
        script call), and forget interest that lapsed (also with no ids); with `marks`, each
        task's state and last sequence read after it (None for a task unknown or expired)."""
        if not task_ids and marks:
            return []
        chunks = [task_ids[i : i + 1000] for i in range(0, len(task_ids), 1000)] or [[]]
        many = [calls.watch(self.layout, interest_ms, chunk, marks=marks) for chunk in chunks]
        replies = await self._run_many(many, replicated=False)
        out: list[tuple[State, int] | None] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            out.extend(calls.watch_reply(reply))
        return out

    async def events_after(
        self, task_id: str, after: int, batch: int = 500
    ) -> AsyncIterator[EventRecord]:
        """Stored events with a sequence greater than `after`, in order (an admitted watch's).
        A compacted task (compact.lua) has only its terminal event left, kept in its hash as
        `tail`."""
        key, start = self.layout.events(task_id), f"({after}-0"
        while True:
            reply = await self.client.xrange(key, min=start, max="+", count=batch)
            entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
            for entry_id, fields in entries:
                after = int(entry_id.split(b"-", 1)[0])
                yield EventRecord.from_stream(task_id, entry_id, fields)
            if not entries:
                tail = await self._tail(task_id)
                if tail is not None and tail.sequence > after:
                    yield tail
                return
            if len(entries) < batch:
                return
            start = f"({entries[-1][0].decode()}"

    async def _tail(self, task_id: str) -> EventRecord | None:
        """The terminal event a compacted task keeps in its hash (compact.lua), if any: its
        sequence alone when the event is the hash's state, attempt, outcome and finish time."""
        names = ("tail", "state", "attempt", "finished", "result", "error", "cancel_reason")
        reply = await self.client.hmget(self.layout.task(task_id), *names)
        tail, state, attempt, finished, result, error, reason = (
            v.decode() if v is not None else None for v in cast("list[bytes | None]", reply)
        )
        if tail is None or state is None:
            return None
        if " " in tail:
            return EventRecord.from_live(task_id, tail.encode())
        outcome = {"SUCCEEDED": ("result", result), "FAILED": ("error", error)}
        name, value = outcome.get(state, ("reason", reason))
        fields = {"type": "state", "state": state, "attempt": attempt or "0", "ts": finished or "0"}
        return EventRecord(task_id, int(tail), {**fields, name: value or ""})

    async def page(
        self,
        *,
        tenant: str,
        state: State | None,
        kind: str,
        labels: dict[str, str],
        page_size: int,
        cursor: tuple[int, str] | None,
        payloads: bool = False,
        max_bytes: int = 1 << 20,
    ) -> tuple[list[TaskRecord], tuple[int, str] | None]:
        """A page of `tenant`'s tasks, newest first, and the cursor of the next page (None at
        the end).

        The cursor is the last task returned (creation time, id); the next page starts right
        after its rank, so tasks created in the same millisecond are neither skipped nor
        repeated. Filters other than the index's own are applied to the records read, scanning
        at most 20 pages' worth (a page may then come back short, with a cursor to go on).

        Payloads and results are left empty unless `payloads`; the page ends early once its
        tasks would take more than `max_bytes` as protobuf (one task at least). Payloads are
        measured (HSTRLEN) before they are read, so a page never reads more than it returns.
        """
        index = _pick_index(self.layout.of(tenant), state, kind, labels)
        rank = await self._rank_after(index, cursor)
        found: list[TaskRecord] = []
        used = PAGE_OVERHEAD
        for _ in range(max(20, 1000 // page_size)):
            reply = await self.client.zrevrange(index, rank, rank + page_size - 1, withscores=True)
            rows = cast("list[tuple[bytes, float]]", reply)
            if not rows:
                return await self._with_payloads(found, payloads), None
            records = await self._summaries([m.decode() for m, _ in rows], payloads)
            expired = [m for (m, _), (rec, _) in zip(rows, records, strict=True) if rec is None]
            if expired:  # finished and past retention: drop the stale index entries
                await self.client.zrem(index, *expired)
            rank += len(rows) - len(expired)
            for (member, score), (rec, size) in zip(rows, records, strict=True):
                # The tenant too: an index is the tenant's own, but a worker older than tenants
                # would index any task in the default tenant's (docs/operations.md, upgrades).
                if rec is not None and rec.tenant == tenant and _matches(rec, state, kind, labels):
                    if found and used + size > max_bytes:
                        return await self._with_payloads(found, payloads), cursor
                    found.append(rec)
                    used += size
                cursor = (int(score), member.decode())
                if len(found) == page_size:
                    return await self._with_payloads(found, payloads), cursor
        return await self._with_payloads(found, payloads), cursor

    async def _rank_after(self, index: str, cursor: tuple[int, str] | None) -> int:
        if cursor is None:
            return 0
        rank = cast("int | None", await self.client.zrevrank(index, cursor[1]))
        if rank is not None:
            return int(rank) + 1
        # The cursor's task expired meanwhile: start after everything at least as new.
        return await self.client.zcount(index, cursor[0], "+inf")

    async def _summaries(
        self, ids: list[str], payloads: bool
    ) -> list[tuple[TaskRecord | None, int]]:
        """Each task without payload and result (None when expired), and its size as protobuf
        with them when `payloads`, else without."""
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                key = self.layout.task(task_id)
                pipe.hmget(key, *SUMMARY_FIELDS)
                if payloads:
                    pipe.hstrlen(key, "payload")
                    pipe.hstrlen(key, "result")
            replies = await pipe.execute()
        step, out = 3 if payloads else 1, list[tuple[TaskRecord | None, int]]()
        for i in range(0, len(replies), step):
            values = replies[i]
            if values[0] is None:
                out.append((None, 0))
                continue
            fields = {f: v for f, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
            rec = TaskRecord.from_hash({**fields, "payload": b""})
            extra = int(replies[i + 1]) + int(replies[i + 2]) if payloads else 0
            out.append((rec, _pb_size(rec) + extra))
        return out

    async def _with_payloads(self, records: list[TaskRecord], payloads: bool) -> list[TaskRecord]:
        """The records with their payload and result read in, when asked for."""
        if not payloads or not records:
            return records
        async with self.client.pipeline(transaction=False) as pipe:
            for rec in records:
                pipe.hmget(self.layout.task(rec.id), "payload", "result")
            replies = await pipe.execute()
        return [
            dataclasses.replace(
                rec, payload=(payload or b"").decode(), result=(result or b"").decode()
            )
            for rec, (payload, result) in zip(records, replies, strict=True)
        ]

    async def workers(self, limit: int = 1000) -> list[WorkerRecord]:
        """Live worker processes, most recently seen first; long-gone records are dropped."""
        raw = await self.client.hgetall(self.layout.workers())
        now, records, gone = redis_ms(await self.client.time()), [], []
        for key, value in raw.items():
            try:
                record = WorkerRecord.from_json(value)
            except (ValueError, TypeError):
                gone.append(key)
                continue
            if now - record.seen_ms < LIVE_MS:
                records.append(record)
            elif now - record.seen_ms > 3600_000:  # a process dead for an hour: forget it
                gone.append(key)
        if gone:
            await self.client.hdel(self.layout.workers(), *gone)
        records.sort(key=lambda r: r.seen_ms, reverse=True)
        return records[:limit]

    async def limit_stats(self, most: int = 1000) -> list[calls.LimitFigures]:
        """Each limit key in use: running (or started this period) and waiting; idle keys are
        forgotten on the way (`limits.lua`)."""
        return calls.limits_reply(await self._run(calls.limits(self.layout, most)))

    async def stats(self, tenant: str) -> tuple[list[QueueFigures], list[KindFigures]]:
        """Per-queue figures (shared by every tenant) and `tenant`'s per-kind figures (see
        GetStatsResponse)."""
        kinds = await self.kinds(refresh=True)
        per_queue = await self.client.hgetall(self.layout.running_counts())
        running = {k.decode(): int(v) for k, v in cast("dict[bytes, bytes]", per_queue).items()}
        queues = sorted({info.queue for info in kinds.values()} | set(running))
        mq, mine = self.layout.mq, self.layout.of(tenant)
        async with self.client.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(mq.queue(q))
                pipe.hget(mq.fair(q), "n")  # those waiting in buckets (`place()` in _lib.lua)
                pipe.hlen(mq.msgs(mqlayout.delayed(q)))
                pipe.zcard(mq.dead(q))
            for k in sorted(kinds):
                pipe.hgetall(mine.kind_counts(k))
                pipe.lrange(mine.run_times(k), 0, RUN_TIMES - 1)
            out = await pipe.execute()
        queue_stats = [
            QueueFigures(
                name=q,
                depth=out[4 * i] + max(int(out[4 * i + 1] or 0), 0),
                delayed=out[4 * i + 2],
                dead=out[4 * i + 3],
                running=max(running.get(q, 0), 0),
            )
            for i, q in enumerate(queues)
        ]
        base, kind_stats = 4 * len(queues), []
        for i, k in enumerate(sorted(kinds)):
            counts = {s.decode(): int(v) for s, v in out[base + 2 * i].items()}
            kind_stats.append(
                KindFigures.from_samples(
                    k,
                    {s: max(counts.get(s.value, 0), 0) for s in (*ACTIVE, *TERMINAL)},
                    [int(x) for x in out[base + 2 * i + 1]],
                )
            )
        return queue_stats, kind_stats


def _reused(new: NewTask, existing: str) -> AlreadyExists:
    return AlreadyExists(
        f"idempotency_key {new.idempotency_key!r} was used by task "
        f"{existing} with a different request"
    )


def _pick_index(layout: Layout, state: State | None, kind: str, labels: dict[str, str]) -> str:
    if kind:
        return layout.index_kind(kind)
    if state is not None:
        return layout.index_state(state.value)
    if labels:
        return layout.index_label(layout.label_member(*min(labels.items())))
    return layout.index_all()


def _fresh(task_id: str, new: NewTask, now: int, not_before: int) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        kind=new.kind,
        queue=new.queue,
        state=State.PENDING,
        payload=new.payload,
        labels=new.labels,
        attempt=0,
        max_attempts=new.max_attempts,
        created=now,
        updated=now,
        started=0,
        finished=0,
        not_before=not_before,
        timeout_ms=new.timeout_ms,
        result="",
        error=None,
        last_sequence=1,
        idempotency_key=new.idempotency_key,
        cancel_requested=False,
        progress_fraction=None,
        progress_message="",
        time_to_first_output_ms=None,
        limits=new.limits,
        tenant=new.tenant,
        scheduling=new.scheduling,
    )


def _pb_size(rec: TaskRecord) -> int:
    """An upper bound of the task's size as a protobuf list item, payload and result aside."""
    texts = [rec.id, rec.kind, rec.queue, rec.idempotency_key, rec.progress_message, rec.tenant]
    if rec.error is not None:
        texts += [rec.error.type, rec.error.message]
    labels = sum(len(k.encode()) + len(v.encode()) + LABEL_OVERHEAD for k, v in rec.labels.items())
    return TASK_OVERHEAD + labels + sum(len(t.encode()) for t in texts)


def _matches(rec: TaskRecord, state: State | None, kind: str, labels: dict[str, str]) -> bool:
    return (
        (state is None or rec.state == state)
        and (not kind or rec.kind == kind)
        and all(rec.labels.get(k) == v for k, v in labels.items())
    )
