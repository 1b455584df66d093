"""The Dramatiq broker a worker process runs with, and its middleware."""

from __future__ import annotations

import threading

import dramatiq
import redis
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import ShutdownNotifications, TimeLimit

from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import WorkerStore, connect
from taskcast.worker.supervisor import Supervisor


class Broker(RedisBroker):  # subclassing the library broker
    """RedisBroker that recovers the delayed messages Dramatiq drops on a connection error.

    When a consumer thread hits a connection error, Dramatiq discards the delayed messages it
    held in memory, while their ids stay in this (live) worker's ack set in Redis; Dramatiq only
    requeues the acks of dead workers, so those tasks would wait until the process restarts.
    Before a delay-queue consumer starts, its leftover acks are put back on the queue: at that
    moment no consumer of this process holds them.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer for `queue_name`, after requeueing this process's orphaned delayed acks."""
        if queue_name.endswith(".DQ"):
            acks = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
            try:
                orphans = self.client.smembers(acks)
                if orphans:
                    self.logger.warning(
                        "requeueing %d delayed messages held before a connection error on %s",
                        len(orphans),
                        queue_name,
                    )
                    self.do_requeue(queue_name, *orphans)
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None
        return super().consume(queue_name, prefetch, timeout)


def build_broker(settings: WorkerSettings, registry: Registry) -> dramatiq.Broker:
    """A Broker with taskcast's middleware instead of Dramatiq's Retries and AgeLimit."""
    layout = settings.layout
    stopping = threading.Event()
    store = WorkerStore(connect(settings.redis_url, retries=0), layout, stopping)
    lifecycle = Lifecycle(store, registry, settings)
    supervisor = Supervisor(store, lifecycle, registry, settings, stopping)
    # Lost attempts are recovered by taskcast's leases; Dramatiq's own redelivery of a dead
    # worker's messages is only a backstop (its copies are skipped as stale), so its defaults stay.
    return Broker(
        client=connect(settings.redis_url, retries=3),
        namespace=layout.namespace,
        middleware=[
            TimeLimit(time_limit=int(settings.default_timeout * 1000)),
            ShutdownNotifications(),
            lifecycle,
            supervisor,
        ],
    )
