"""The worker's side of the Redis model: start, report and finish attempts; leases; reaping."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from taskcast.core import calls, redisurl, scripts
from taskcast.core.calls import Call, Held, Skipped, Started
from taskcast.core.capacity import WorkerRecord
from taskcast.core.kinds import KindInfo
from taskcast.core.layout import DEFAULT_TENANT, Layout
from taskcast.core.limits import TokenLimit
from taskcast.core.records import TaskError
from taskcast.core.scripts import redis_ms
from taskcast.core.states import State

log = logging.getLogger("taskcast.worker")
T = TypeVar("T")


def connect(url: str, *, retries: int) -> redis.Redis:
    """A Redis client for worker processes.

    taskcast's own calls use `retries=0`: `WorkerStore` retries the ones that must not be lost
    itself, through outages, and the housekeeping loop retries the rest on its next beat.
    Dramatiq's broker client keeps a few quick retries.
    """
    return redisurl.sync_client(
        url,
        socket_timeout=10,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class _Held(threading.local):
    """The connection each thread keeps for its script calls (`WorkerStore.run`)."""

    conn: Connection | None = None


class WorkerStore:
    """Synchronous Redis access for worker threads."""

    def __init__(self, client: redis.Redis, layout: Layout, stopping: threading.Event) -> None:
        self.client = client  # see ServerStore.client on redis-py's reply types
        self.layout = layout
        self._scripts = scripts.register(client)
        self._stopping = stopping
        self._held = _Held()

    def run(self, call: Call) -> Any:
        """Send one script call on this thread's own connection; its reply as redis-py gives it.

        `begin` and `finish` are the two round trips of every task a worker thread runs. Through
        redis-py's client (`Script.__call__`: retry wrapper, timing, the pool's lock and fork
        check on every command) one EVALSHA cost 22-28 us of this process's CPU on the 2-core
        benchmark machine; `EVALSHA` on a connection the thread keeps, 11-12 us (a bare socket
        round trip: 8). The connection is redis-py's own (TLS, Sentinel, timeouts as configured).
        """
        script = self._scripts[call.script]
        conn = self._held.conn
        if conn is None:  # taken from the pool for good: `client.close()` closes it with the rest
            conn = self._held.conn = self.client.connection_pool.get_connection()
        packed = conn.pack_command("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args)
        try:
            conn.send_packed_command(packed)  # a PING first after 10 s idle, as redis-py does
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: redis-py loads it
            return script(keys=call.keys, args=call.args)
        except redis.ResponseError:  # the reply was read whole: the connection stays usable
            raise
        except BaseException:  # a reply half read, or none: never reuse this connection
            self._held.conn = None
            conn.disconnect()
            # Back to the pool, whose `get_connection` connects anew, asking Sentinel (if any)
            # where the primary is now: a bare reconnect would go back to the old address.
            self.client.connection_pool.release(conn)
            raise

    def persist(self, what: str, fn: Callable[[], T]) -> T:
        """Retry `fn` through a Redis outage: a lost begin or finish would strand a task."""
        delay = 0.1
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self._stopping.is_set():
                    raise
                log.warning("redis unavailable during %s (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)  # a worker thread with nothing else it may do
                delay = min(delay * 2, 2.0)

    def begin(
        self,
        task_id: str,
        attempt: int,
        lease_ms: int,
        token: str,
        turn: int = 0,
        ack: calls.Ack | None = None,
        tokens: TokenLimit | None = None,
    ) -> Started | Skipped | Held:
        """Start `attempt` (acknowledging the delivery named by `ack`); returns `Started`, why
        this delivery is skipped, or the limit that holds it back (`turn`: the one a rate limit
        reserved for it earlier, 0 for none; `tokens`: the kind's token budget)."""
        call = calls.begin(self.layout, task_id, attempt, lease_ms, token, turn, ack, tokens)
        return calls.begin_reply(self.persist("begin", lambda: self.run(call)))

    def payload(self, task_id: str) -> Any:
        """A task's payload, parsed (None: no such task), for a token budget's key."""
        key = self.layout.task(task_id)
        raw = self.persist("payload", lambda: self.client.hget(key, "payload"))
        return json.loads(raw) if raw else None

    def event(self, task_id: str, attempt: int, n: int, fields: list[str]) -> bool:
        """Append a progress or output event; returns whether a cancel was requested."""
        call = calls.event(self.layout, task_id, attempt, n, fields)
        return calls.event_reply(self.persist("event", lambda: self.run(call))).cancel_requested

    def finish(self, call: Call) -> State | None:
        """Record how an attempt ended (a `calls.finish` call), retrying through Redis outages.

        Returns the task's new state, or None when the attempt no longer owned it.
        """
        return calls.finish_reply(self.persist("finish", lambda: self.run(call)))

    def renew_leases(self, task_ids: Iterable[str], lease_ms: int) -> None:
        """Extend the leases of attempts this process is running, to Redis's time + `lease_ms`."""
        ids = list(task_ids)
        if ids:
            self.run(calls.renew(self.layout, lease_ms, ids))

    def cancel_flags(self, task_ids: list[str]) -> list[bool]:
        """Whether a cancel was requested, for each task; one round trip."""
        if not task_ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self.layout.task(task_id), "cancel")
            return [flag == b"1" for flag in cast("list[bytes | None]", pipe.execute())]

    def register_worker(self, record: WorkerRecord) -> None:
        """Record a worker process's queues and capacity (slots, threads) for `GetStats`."""
        self.client.hset(self.layout.workers(), record.id, record.to_json())

    def unregister_worker(self, worker_id: str) -> None:
        """Drop a stopped worker process's capacity record."""
        self.client.hdel(self.layout.workers(), worker_id)

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Tasks whose running attempt stopped renewing its lease, by Redis's clock."""
        return calls.expired_reply(self.run(calls.expired(self.layout, limit)))

    def reap(self, task_id: str) -> State | None:
        """Give up on a lost attempt: retry it now, or fail the task when attempts are used up.

        Returns the task's new state, or None when the attempt was not lost after all.
        """
        fields = cast(
            "list[bytes | None]", self.client.hmget(self.layout.task(task_id), *calls.REAP_FIELDS)
        )
        if fields[0] is None:
            self.client.zrem(self.layout.leases(), task_id)
            return None
        call = calls.reap(self.layout, task_id, cast("list[bytes]", fields))
        return calls.reap_reply(self.run(call))

    def abandon(self, task_id: str, attempt: int, error: TaskError) -> State | None:
        """Fail a waiting task whose kind no live worker serves; None if it moved on."""
        return calls.abandon_reply(self.run(calls.abandon(self.layout, task_id, attempt, error)))

    def kind_seen_ms(self, kind: str) -> int:
        """When a worker last recorded that it serves `kind` (0: never)."""
        raw = cast("bytes | None", self.client.hget(self.layout.kinds(), kind))
        return KindInfo.from_json(raw).seen_ms if raw else 0

    def sweep_lock(self, interval: float) -> bool:
        """Whether this worker sweeps (prunes and compacts) this interval: one worker does."""
        lock = self.layout.prune_lock()
        return bool(self.client.set(lock, 1, nx=True, px=max(int(interval * 900), 100)))

    def prune_indexes(self, budget: int = 5000) -> int:
        """Drop the index entries of tasks that expired (the caller holds `sweep_lock`).

        Only entries created before now - retention (Redis's clock, as `created` is) can belong
        to an expired task (a task expires `retention` after it finished, and finished after it
        was created): those are checked, oldest first, up to `budget` per call, 200 per script
        call. A kind or label index left empty leaves the set that lists it (`prune.lua`), so
        neither set grows with every label ever used. Every tenant's indexes are swept: the
        default tenant's, then those of each tenant that ever submitted (`Layout.tenants`).
        Returns how many entries were dropped.
        """
        removed = 0
        others = cast("set[bytes]", self.client.smembers(self.layout.tenants()))
        for tenant in [DEFAULT_TENANT, *sorted(t.decode() for t in others)]:
            layout = self.layout.of(tenant)
            kinds = cast("set[bytes]", self.client.smembers(layout.indexed_kinds()))
            labels = cast("set[bytes]", self.client.smembers(layout.indexed_labels()))
            for index in calls.indexes(layout, kinds, labels):
                removed, budget = self._prune_index(index, removed, budget)
        return removed

    def compact(self, window: float, budget: int = 50_000) -> int:
        """Compact the tasks that finished more than `window` seconds ago (`compact.lua`), up to
        `budget` per call, 500 per script call; returns how many. Called by the pruner, under
        its lock, so one worker per interval does it."""
        done = 0
        while budget > 0:
            looked, compacted = calls.compact_reply(
                self.run(calls.compact(self.layout, int(window * 1000), min(500, budget)))
            )
            done += compacted
            budget -= looked
            if looked < 500:
                break
        return done

    def _prune_index(self, index: calls.Index, removed: int, budget: int) -> tuple[int, int]:
        """Sweep one index within `budget`; the dropped count and budget left, updated."""
        start = 0
        while budget > 0:
            checked, gone = calls.prune_reply(self.run(calls.prune(self.layout, index, start, 200)))
            removed += gone
            start += checked - gone
            budget -= checked
            if checked < 200:
                break
        return removed, budget

    def now(self) -> int:
        """Redis's clock in epoch ms: the one clock of every stored or compared time."""
        return redis_ms(self.client.time())

    def register_kinds(self, kinds: dict[str, KindInfo]) -> None:
        """Tell servers which kinds exist and their defaults (queue, attempts, timeout)."""
        if kinds:
            seen = self.now()
            mapping: dict[FieldT, EncodableT] = {
                k: replace(v, seen_ms=seen).to_json() for k, v in kinds.items()
            }
            self.client.hset(self.layout.kinds(), mapping=mapping)

    def run_once(self, task_id: str, key: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` once per (task, key): a stored result short-cuts every later call."""
        done = self.layout.once(task_id, key)
        stored = cast("bytes | None", self.client.get(done))
        if stored is not None:
            return json.loads(stored)
        result = fn()
        # The side effect happened: recording it must outlast a Redis blip, or a retry repeats it.
        text = json.dumps(result)
        self.persist("run_once", lambda: self.client.set(done, text, ex=self.layout.retention_s))
        return result
