"""Per-process housekeeping threads: leases, cancel requests, lost attempts, kind registration."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import WorkerStore

log = logging.getLogger("taskcast.worker")


class Supervisor(Middleware):
    """Runs from worker boot to shutdown in each worker process (never in the CLI's parent)."""

    def __init__(
        self,
        store: WorkerStore,
        lifecycle: Lifecycle,
        registry: Registry,
        settings: WorkerSettings,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.registry = registry
        self.settings = settings
        self.stopping = stopping
        self._threads: list[threading.Thread] = []

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Register the kinds this process serves, then start the housekeeping threads."""
        self.store.register_kinds(self._kinds())
        for target in (self._tick_loop, self._cancel_loop):
            thread = threading.Thread(
                target=target, name=f"taskcast-{target.__name__}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Stop the threads; running attempts keep their leases until they finish."""
        self.stopping.set()

    def _kinds(self) -> dict[str, dict[str, Any]]:
        s = self.settings
        return {
            k.kind: {
                "queue": k.queue,
                "max_attempts": k.max_attempts or s.default_max_attempts,
                "timeout_ms": int((k.timeout or s.default_timeout) * 1000),
            }
            for k in self.registry.kinds.values()
        }

    def _tick_loop(self) -> None:
        interval = min(self.settings.lease / 5, self.settings.reap_interval)
        connected_since: float | None = None
        ticks, next_prune = 0, 0.0
        while not self.stopping.wait(interval):
            ticks += 1
            try:
                self._renew()
                connected_since = connected_since or time.monotonic()
                # Right after an outage every lease looks expired, though the workers are alive:
                # reap only once everyone has had a full lease period to renew.
                if time.monotonic() - connected_since >= self.settings.lease:
                    self._reap()
                if ticks % 30 == 0:
                    self.store.register_kinds(self._kinds())
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.settings.prune_interval
                    self.store.prune_indexes(self.settings.prune_interval)
            except redis.RedisError as exc:
                connected_since = None
                log.warning("housekeeping skipped a beat: redis error %s", exc)

    def _renew(self) -> None:
        running = dict(self.lifecycle.running)
        self.store.renew_leases(running, self.settings.lease_ms)
        if not running:
            return
        # One round trip for all cancel flags: catches a cancel published while unsubscribed.
        with self.store.client.pipeline(transaction=False) as pipe:
            for task_id in running:
                pipe.hget(self.store.layout.task(task_id), "cancel")
            flags = pipe.execute()
        for ctx, flag in zip(running.values(), flags, strict=True):
            if flag == b"1":
                ctx.request_cancel()

    def _reap(self) -> None:
        for task_id in self.store.expired_leases():
            state = self.store.reap(task_id)
            if state != "skip":
                log.warning("task %s lost its worker; now %s", task_id, state)

    def _cancel_loop(self) -> None:
        channel = self.store.layout.key("cancel")
        while not self.stopping.is_set():
            try:
                with self.store.client.pubsub(ignore_subscribe_messages=True) as sub:
                    sub.subscribe(channel)
                    while not self.stopping.is_set():
                        msg = sub.get_message(timeout=1.0)
                        if msg is not None:
                            ctx = self.lifecycle.running.get(msg["data"].decode())
                            if ctx is not None:
                                ctx.request_cancel()
            except redis.RedisError as exc:
                log.warning("cancel listener lost redis (%s); reconnecting", exc)
                self.stopping.wait(1.0)
