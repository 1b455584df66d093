"""Per-process housekeeping threads: leases, cancel requests, lost attempts, kind registration."""

from __future__ import annotations

import logging
import threading
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
        self, store: WorkerStore, lifecycle: Lifecycle, registry: Registry, settings: WorkerSettings
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.registry = registry
        self.settings = settings
        self.stopping = threading.Event()
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
        ticks = 0
        while not self.stopping.wait(interval):
            ticks += 1
            try:
                self._tick(register=ticks % 30 == 0)
            except redis.RedisError as exc:
                log.warning("housekeeping skipped a beat: redis error %s", exc)

    def _tick(self, *, register: bool) -> None:
        running = dict(self.lifecycle.running)
        self.store.renew_leases(running, self.settings.lease_ms)
        if running:  # a cancel published while our subscription was down is caught here
            flags = self.store.client.hmget  # one call per task; few tasks run per process
            for task_id, ctx in running.items():
                if flags(self.store.layout.task(task_id), "cancel")[0] == b"1":
                    ctx.request_cancel()
        for task_id in self.store.expired_leases():
            state = self.store.reap(task_id)
            if state != "skip":
                log.warning("task %s lost its worker; now %s", task_id, state)
        if register:
            self.store.register_kinds(self._kinds())

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
