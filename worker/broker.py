"""The Dramatiq broker a worker process runs with, and its middleware."""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import ShutdownNotifications, TimeLimit

from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import WorkerStore, connect
from taskcast.worker.supervisor import Supervisor


def build_broker(settings: WorkerSettings, registry: Registry) -> dramatiq.Broker:
    """A RedisBroker with taskcast's middleware instead of Dramatiq's Retries and AgeLimit."""
    layout = settings.layout
    stopping = threading.Event()
    store = WorkerStore(connect(settings.redis_url), layout, stopping)
    lifecycle = Lifecycle(store, registry, settings)
    supervisor = Supervisor(store, lifecycle, registry, settings)
    supervisor.stopping = stopping
    # Lost attempts are recovered by taskcast's leases; Dramatiq's own redelivery of a dead
    # worker's messages is only a backstop (its copies are skipped as stale), so its defaults stay.
    broker = RedisBroker(
        client=connect(settings.redis_url),
        namespace=layout.namespace,
        middleware=[
            TimeLimit(time_limit=int(settings.default_timeout * 1000)),
            ShutdownNotifications(),
            lifecycle,
            supervisor,
        ],
    )
    return broker
