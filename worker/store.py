"""The worker's side of the Redis model: start, report and finish attempts; leases; reaping."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from taskcast.core import messages, scripts
from taskcast.core.capacity import WorkerRecord
from taskcast.core.records import TaskError
from taskcast.core.scripts import Layout, redis_ms

log = logging.getLogger("taskcast.worker")
T = TypeVar("T")


@dataclass(frozen=True)
class Started:
    """What `begin` hands the handler when an attempt may run."""

    payload: str
    max_attempts: int
    started_ms: int


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as `finish` records it."""

    kind: str  # "ok", "error" or "cancelled"
    result: str = ""
    error: TaskError | None = None
    retry_delay_ms: int = 0


def connect(url: str, *, retries: int) -> redis.Redis:
    """A Redis client for worker processes.

    taskcast's own calls use `retries=0`: `WorkerStore` retries the ones that must not be lost
    itself, through outages, and the housekeeping loop retries the rest on its next beat.
    Dramatiq's broker client keeps a few quick retries.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class WorkerStore:
    """Synchronous Redis access for worker threads."""

    def __init__(self, client: redis.Redis, layout: Layout, stopping: threading.Event) -> None:
        self.client: Any = client  # see ServerStore.client on redis-py's reply types
        self.layout = layout
        self._scripts = scripts.register(client)
        self._stopping = stopping

    def call(self, task_id: str, args: Iterable[Any]) -> tuple[list[str], list[Any]]:
        """The keys and arguments of a script call about one task (for this store or a Writer)."""
        return [self.layout.task(task_id)], [*self.layout.common_args(), *args]

    def _run(self, name: str, task_id: str, args: Iterable[Any]) -> Any:
        keys, argv = self.call(task_id, args)
        return self._scripts[name](keys=keys, args=argv)

    def _script(self, name: str, key: str, args: Iterable[Any]) -> Any:
        return self._scripts[name](keys=[key], args=[*self.layout.common_args(), *args])

    def _persist(self, what: str, fn: Callable[[], T]) -> T:
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

    def begin(self, task_id: str, attempt: int, lease_ms: int, token: str) -> Started | str:
        """Start `attempt`; returns `Started`, or the reason to skip this delivery."""
        reply = self._persist(
            "begin", lambda: self._run("begin", task_id, [task_id, attempt, lease_ms, token])
        )
        if reply[0] == b"run":
            return Started(reply[1].decode(), int(reply[2]), int(reply[3]))
        return str(reply[1].decode())

    def event(self, task_id: str, attempt: int, n: int, fields: list[str]) -> bool:
        """Append a progress or output event; returns whether a cancel was requested."""
        reply = self._persist(
            "event", lambda: self._run("event", task_id, [task_id, attempt, n, *fields])
        )
        return bool(reply[1] == b"1")

    def finish(
        self,
        task_id: str,
        attempt: int,
        outcome: Outcome,
        *,
        kind: str,
        queue: str,
        timeout_ms: int,
    ) -> str:
        """Record how the attempt ended; schedules the next attempt when it may retry."""
        args = self.finish_args(
            task_id, attempt, outcome, kind=kind, queue=queue, timeout_ms=timeout_ms
        )
        reply = self._persist("finish", lambda: self._run("finish", task_id, args))
        return str(reply[0].decode())

    @staticmethod
    def finish_args(
        task_id: str,
        attempt: int,
        outcome: Outcome,
        *,
        kind: str,
        queue: str,
        timeout_ms: int,
    ) -> list[Any]:
        """The `finish` script's own arguments (after the common ones)."""
        err = outcome.error
        retryable = err is not None and err.retryable
        # The next attempt's message, used by the script only if it decides to retry.
        msg = (
            messages.encode(
                task_id=task_id,
                kind=kind,
                queue=queue,
                attempt=attempt + 1,
                timeout_ms=timeout_ms,
                delay_ms=outcome.retry_delay_ms,
            )
            if retryable
            else None
        )
        args: list[Any] = [
            task_id,
            attempt,
            outcome.kind,
            outcome.result,
            err.to_json() if err else "",
            "1" if retryable else "0",
            outcome.retry_delay_ms,
            *((msg.queue, msg.redis_id, msg.data) if msg else ("", "", "")),
        ]
        return args

    def renew_leases(self, task_ids: Iterable[str], lease_ms: int) -> None:
        """Extend the leases of attempts this process is running, to Redis's time + `lease_ms`."""
        ids = list(task_ids)
        if ids:
            self._script("renew", self.layout.key("leases"), [lease_ms, *ids])

    def cancel_flags(self, task_ids: list[str]) -> list[bool]:
        """Whether a cancel was requested, for each task; one round trip."""
        if not task_ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self.layout.task(task_id), "cancel")
            return [flag == b"1" for flag in pipe.execute()]

    def register_worker(self, record: WorkerRecord) -> None:
        """Record a worker process's queues and capacity (slots, threads) for `GetStats`."""
        self.client.hset(self.layout.key("workers"), record.id, record.to_json())

    def unregister_worker(self, worker_id: str) -> None:
        """Drop a stopped worker process's capacity record."""
        self.client.hdel(self.layout.key("workers"), worker_id)

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Tasks whose running attempt stopped renewing its lease, by Redis's clock."""
        ids = self._script("expired", self.layout.key("leases"), [limit])
        return [i.decode() for i in ids]

    def reap(self, task_id: str) -> str:
        """Give up on a lost attempt: retry it now, or fail the task when attempts are used up."""
        fields = self.client.hmget(
            self.layout.task(task_id), "attempt", "kind", "queue", "timeout_ms", "max_attempts"
        )
        if fields[0] is None:
            self.client.zrem(self.layout.key("leases"), task_id)
            return "skip"
        attempt, kind, queue, timeout_ms, max_attempts = (f.decode() for f in fields)
        msg = messages.encode(
            task_id=task_id,
            kind=kind,
            queue=queue,
            attempt=int(attempt) + 1,
            timeout_ms=int(timeout_ms),
        )
        what = (
            f"the worker running attempt {attempt} stopped renewing its lease "
            "(killed, out of memory, or cut off from Redis)"
        )
        retry = TaskError("WorkerLost", what + "; retrying", True)
        final = TaskError("WorkerLost", f"{what}; all {max_attempts} attempts used", False)
        reply = self._run(
            "reap",
            task_id,
            [task_id, attempt, retry.to_json(), final.to_json(), msg.queue, msg.redis_id, msg.data],
        )
        return str(reply[0].decode())

    def abandon(self, task_id: str, attempt: int, error: TaskError) -> str:
        """Fail a waiting task whose kind no live worker serves; "skip" if it moved on."""
        reply = self._run("abandon", task_id, [task_id, attempt, error.to_json()])
        return str(reply[0].decode())

    def kind_seen_ms(self, kind: str) -> int:
        """When a worker last recorded that it serves `kind` (0: never)."""
        raw = self.client.hget(self.layout.key("kinds"), kind)
        return int(json.loads(raw).get("seen", 0)) if raw else 0

    def prune_indexes(self, interval: float, budget: int = 5000) -> int:
        """Drop the index entries of tasks that expired; one worker per `interval` does it.

        Only entries created before now - retention (Redis's clock, as `created` is) can belong
        to an expired task (a task expires `retention` after it finished, and finished after it
        was created): those are checked, oldest first, up to `budget` per call, 200 per script
        call. A kind or label index left empty leaves the set that lists it (`prune.lua`), so
        neither set grows with every label ever used. Returns how many entries were dropped.
        """
        lock = self.layout.key("prune-lock")
        if not self.client.set(lock, 1, nx=True, px=max(int(interval * 900), 100)):
            return 0
        removed = 0
        for index, listed_in, member in self._indexes():
            start = 0
            while budget > 0:
                checked, gone = self._script("prune", index, [index, start, 200, listed_in, member])
                removed += gone
                start += checked - gone
                budget -= checked
                if checked < 200:
                    break
        return removed

    def _indexes(self) -> list[tuple[str, str, str]]:
        """Each index, with the set that lists it and its member there ("" for fixed ones)."""
        idx = self.layout.key("idx")
        kinds = self.client.smembers(f"{idx}:kinds")
        labels = self.client.smembers(f"{idx}:labels")
        states = ("PENDING", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED")
        return [
            (f"{idx}:all", "", ""),
            *((f"{idx}:state:{s}", "", "") for s in states),
            *((f"{idx}:kind:{k.decode()}", f"{idx}:kinds", k.decode()) for k in kinds),
            *((f"{idx}:label:{v.decode()}", f"{idx}:labels", v.decode()) for v in labels),
        ]

    def now(self) -> int:
        """Redis's clock in epoch ms: the one clock of every stored or compared time."""
        return redis_ms(self.client.time())

    def register_kinds(self, kinds: dict[str, dict[str, Any]]) -> None:
        """Tell servers which kinds exist and their defaults (queue, attempts, timeout)."""
        if kinds:
            seen = self.now()
            mapping = {k: json.dumps({**v, "seen": seen}) for k, v in kinds.items()}
            self.client.hset(self.layout.key("kinds"), mapping=mapping)

    def run_once(self, task_id: str, key: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` once per (task, key): a stored result short-cuts every later call."""
        done = self.layout.key("once", task_id, key)
        stored = self.client.get(done)
        if stored is not None:
            return json.loads(stored)
        result = fn()
        # The side effect happened: recording it must outlast a Redis blip, or a retry repeats it.
        text = json.dumps(result)
        self._persist("run_once", lambda: self.client.set(done, text, ex=self.layout.retention_s))
        return result
