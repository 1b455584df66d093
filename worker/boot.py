"""Entry point for Dramatiq's CLI: `dramatiq taskcast.worker.boot:setup your.module`."""

from __future__ import annotations

import importlib
import logging
import os
import threading

import dramatiq
import redis.asyncio as aredis
from dramatiq.middleware import ShutdownNotifications, TimeLimit

from taskcast.core import logs, redisurl, tracing
from taskcast.worker import transport
from taskcast.worker.aio import AsyncAttempts
from taskcast.worker.housekeeping import Housekeeping
from taskcast.worker.kinds import redrive
from taskcast.worker.logs import AttemptFilter
from taskcast.worker.metrics import Metrics
from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry, registry
from taskcast.worker.runner import make_actor_fn
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.slots import Slots
from taskcast.worker.store import WorkerStore, connect
from taskcast.worker.writer import Writer

BUILTIN_KINDS = (
    "taskcast.worker.kinds.demo",
    "taskcast.worker.kinds.ai",
    "taskcast.worker.kinds.http",
    "taskcast.worker.kinds.email",
    "taskcast.worker.kinds.redrive",
)


def setup() -> None:
    """Build this process's settings and broker, and bind every kind (built-in ones included)."""
    # Dramatiq's CLI sets each worker process to INFO; honour `taskcast --log-level`.
    logging.getLogger().setLevel(os.environ.get("TASKCAST_LOG_LEVEL", "INFO").upper())
    settings = WorkerSettings()
    # On the handlers Dramatiq's CLI gave this process (its pipe to the parent, which prints it).
    logs.use_format(settings.log_format, AttemptFilter())
    broker = build_broker(settings, registry)
    dramatiq.set_broker(broker)
    registry.bind(broker, make_actor_fn)
    for module in BUILTIN_KINDS:
        importlib.import_module(module)


def build_broker(settings: WorkerSettings, registry: Registry) -> dramatiq.Broker:
    """A Broker with taskcast's middleware instead of Dramatiq's Retries and AgeLimit."""
    layout = settings.layout
    stopping = threading.Event()  # set once the process's attempts are done, at shutdown
    store = WorkerStore(connect(settings.redis_url, retries=0), layout, stopping)
    slots = Slots(settings.slots)
    aio = AsyncAttempts(slots)
    writer = Writer(_async_client(settings.redis_url), aio.loop)
    redrive.configure(_async_client(settings.redis_url), layout)  # its own pipelines, same loop
    tracer = tracing.setup("taskcast-worker")  # in this process, after Dramatiq forked it
    lifecycle = Lifecycle(store, registry, settings, aio, writer, tracer)
    # Lost attempts are recovered by taskcast's leases; Dramatiq's own redelivery of a dead
    # worker's messages is only a backstop (its copies are skipped as stale), so its defaults stay.
    return transport.Broker(
        client=connect(settings.redis_url, retries=3),
        namespace=layout.namespace,
        heartbeat_timeout=int(settings.mq_heartbeat_timeout * 1000),
        maintenance_chance=settings.mq_maintenance_chance,
        store=store,
        slots=slots,
        unserved_timeout=settings.unserved_kind_timeout,
        middleware=[
            Metrics(slots),  # first: it counts every message a thread takes, skipped ones too
            TimeLimit(time_limit=int(settings.default_timeout * 1000)),
            ShutdownNotifications(),
            # Before the Lifecycle: shutdown hooks run in reverse, so leases are still renewed
            # while the Lifecycle drains its async attempts.
            Housekeeping(store, lifecycle, registry, settings, slots, stopping),
            lifecycle,
        ],
    )


def _async_client(url: str) -> aredis.Redis:
    # No retries inside redis-py: the Writer retries whole batches itself (its scripts are fenced).
    return redisurl.async_client(url, socket_timeout=10, socket_connect_timeout=2, retry=None)
