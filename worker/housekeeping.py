"""Per-process housekeeping: leases, lost attempts, cancel requests, kind and capacity records,
index pruning. Each is its own thread that logs and survives any exception, so a bug or a bad key
in one (pruning, say) can never stop another (lease renewal, whose death would get this process's
running attempts reaped and run twice).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from taskcast.core import mqlayout
from taskcast.core.capacity import WorkerRecord
from taskcast.core.kinds import KindInfo
from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.slots import Slots
from taskcast.worker.store import WorkerStore

log = logging.getLogger("taskcast.worker")

__all__ = ["Housekeeping"]


class Loop:
    """A housekeeping thread: `step()` every `interval` seconds until stopped; never dies."""

    name = "loop"
    at_once = False  # take the first step at start, not after one interval

    def __init__(self, stopping: threading.Event, interval: float) -> None:
        self.stopping = stopping
        self.interval = interval
        self.thread = threading.Thread(target=self._run, name=f"taskcast-{self.name}", daemon=True)

    def _run(self) -> None:
        if not self.at_once and self.stopping.wait(self.interval):
            return
        while True:
            try:
                self.step()
            except redis.RedisError as exc:
                self.on_redis_error()
                log.warning("%s skipped a beat: redis error %s", self.name, exc)
            except Exception:  # a bug must not end the thread: the others depend on no one
                log.exception("%s failed; going on", self.name)
            if self.stopping.wait(self.interval):
                return

    def step(self) -> None:
        """One round of this loop's work."""

    def on_redis_error(self) -> None:
        """Called after a Redis error, before the next round."""


class LeaseKeeper(Loop):
    """Renews the leases of this process's running attempts and reads their cancel flags."""

    name = "leases"

    def __init__(
        self,
        stopping: threading.Event,
        store: WorkerStore,
        lifecycle: Lifecycle,
        settings: WorkerSettings,
    ) -> None:
        super().__init__(stopping, settings.lease / 5)
        self.store, self.lifecycle, self.lease_ms = store, lifecycle, settings.lease_ms

    def step(self) -> None:
        running = dict(self.lifecycle.running)
        self.store.renew_leases(running, self.lease_ms)
        # One round trip for all cancel flags: catches a cancel published while unsubscribed.
        flags = self.store.cancel_flags(list(running))
        for ctx, flag in zip(running.values(), flags, strict=True):
            if flag:
                ctx.request_cancel()


class Reaper(Loop):
    """Gives up on attempts whose worker stopped renewing its lease."""

    name = "reaper"

    def __init__(
        self, stopping: threading.Event, store: WorkerStore, settings: WorkerSettings
    ) -> None:
        super().__init__(stopping, settings.reap_interval)
        self.store, self.lease = store, settings.lease
        self.connected_since: float | None = None

    def step(self) -> None:
        self.store.client.ping()
        self.connected_since = self.connected_since or time.monotonic()
        # Right after an outage every lease looks expired, though the workers are alive:
        # reap only once everyone has had a full lease period to renew.
        if time.monotonic() - self.connected_since < self.lease:
            return
        for task_id in self.store.expired_leases():
            state = self.store.reap(task_id)
            if state is not None:
                log.warning("task %s lost its worker; now %s", task_id, state.value)

    def on_redis_error(self) -> None:
        self.connected_since = None


class Registrar(Loop):
    """Records the kinds this process serves and its capacity, for servers and `GetStats`."""

    name = "registrar"
    at_once = True  # servers learn the kinds as soon as the process is up

    def __init__(
        self,
        stopping: threading.Event,
        store: WorkerStore,
        registry: Registry,
        settings: WorkerSettings,
        slots: Slots,
        lifecycle: Lifecycle,
    ) -> None:
        super().__init__(stopping, settings.register_interval)
        self.store, self.registry, self.settings = store, registry, settings
        self.slots, self.lifecycle = slots, lifecycle
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.threads = 0
        self.queues: list[str] = []

    def step(self) -> None:
        self.store.register_kinds(self.kinds())
        running, async_running = len(self.lifecycle.running), self.slots.running
        self.store.register_worker(
            WorkerRecord(
                id=self.id,
                queues=self.queues,
                slots=self.slots.capacity,
                slots_used=async_running,
                threads=self.threads,
                threads_busy=max(0, running - async_running),
                seen_ms=self.store.now(),
            )
        )

    def kinds(self) -> dict[str, KindInfo]:
        """Each kind this process serves, with its defaults and payload schema."""
        s = self.settings
        return {
            k.kind: KindInfo(
                queue=k.queue,
                max_attempts=k.max_attempts or s.default_max_attempts,
                timeout_ms=int((k.timeout or s.default_timeout) * 1000),
                schema=k.schema(),
                concurrency=k.concurrency,
                rate=k.rate,
            )
            for k in self.registry.kinds.values()
        }

    def forget(self) -> None:
        """Drop this process's capacity record (graceful stop)."""
        self.store.unregister_worker(self.id)


class Pruner(Loop):
    """Sweeps expired tasks out of the list indexes and compacts finished ones (one worker per
    interval does it)."""

    name = "pruner"
    at_once = True

    def __init__(
        self, stopping: threading.Event, store: WorkerStore, settings: WorkerSettings
    ) -> None:
        super().__init__(stopping, settings.prune_interval)
        self.store = store
        self.compact_after = settings.compact_after

    def step(self) -> None:
        if self.store.sweep_lock(self.interval):
            self.store.compact(self.compact_after)
            self.store.prune_indexes()


class CancelListener(Loop):
    """Cancels running attempts the moment a cancel is published (the flags are the backstop)."""

    name = "cancels"
    at_once = True

    def __init__(self, stopping: threading.Event, store: WorkerStore, lifecycle: Lifecycle) -> None:
        super().__init__(stopping, 1.0)
        self.store, self.lifecycle = store, lifecycle

    def step(self) -> None:
        with self.store.client.pubsub(ignore_subscribe_messages=True) as sub:
            sub.subscribe(self.store.layout.cancel_channel())
            while not self.stopping.is_set():
                msg = sub.get_message(timeout=1.0)
                if msg is not None:
                    ctx = self.lifecycle.running.get(msg["data"].decode())
                    if ctx is not None:
                        ctx.request_cancel()


class Housekeeping(Middleware):
    """Runs the loops from worker boot until running attempts are done at shutdown.

    Place it before the Lifecycle: `after_worker_shutdown` hooks run in reverse order, so the
    Lifecycle drains its async attempts while leases are still renewed here.
    """

    def __init__(
        self,
        store: WorkerStore,
        lifecycle: Lifecycle,
        registry: Registry,
        settings: WorkerSettings,
        slots: Slots,
        stopping: threading.Event,
    ) -> None:
        self.stopping = stopping
        self.registrar = Registrar(self.stopping, store, registry, settings, slots, lifecycle)
        self.loops: list[Loop] = [
            LeaseKeeper(self.stopping, store, lifecycle, settings),
            Reaper(self.stopping, store, settings),
            CancelListener(self.stopping, store, lifecycle),
            self.registrar,
            Pruner(self.stopping, store, settings),
        ]

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Start every loop (the registrar records kinds and capacity at once).

        Nothing here talks to Redis: a Redis error at boot must not keep the loops (leases
        above all) from starting; each loop rides out errors itself.
        """
        self.registrar.threads = worker.worker_threads
        queues = worker.consumer_whitelist or broker.get_declared_queues()
        self.registrar.queues = sorted(q for q in queues if not mqlayout.is_delayed(q))
        for loop in self.loops:
            loop.thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Stop the loops: by now every attempt of this process has finished or been handed back."""
        self.stopping.set()
        try:
            self.registrar.forget()
        except redis.RedisError as exc:
            log.warning("could not drop this worker's capacity record: %s", exc)
