"""The Dramatiq broker a worker process runs with, its consumer, and its middleware."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import ShutdownNotifications, TimeLimit

from taskcast.worker.middleware import Lifecycle
from taskcast.worker.registry import Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import WorkerStore, connect
from taskcast.worker.supervisor import Supervisor


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that an idle one blocks on the queue's wake-up list
    (BLPOP, up to the poll interval) instead of sleeping with a growing backoff: a message
    enqueued by taskcast (`enqueue()` in _lib.lua pushes a token) is picked up at once.

    The body follows `_RedisConsumer.__next__` of Dramatiq 2.2; only the wait differs.
    """

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                except IndexError:
                    room = self.prefetch - self.outstanding_message_count
                    if room > 0:
                        self.message_cache = self.broker.do_fetch(self.queue_name, room)
                        if self.message_cache:
                            continue
                        # Empty: wait for a token. Stale tokens only cause an empty fetch.
                        wake = f"{self.broker.namespace}:{self.queue_name}.wake"
                        self.broker.client.blpop([wake], timeout=self.timeout / 1000)
                    else:
                        # Full: leave the tokens to consumers that can take work.
                        self.misses, backoff_ms = compute_backoff(
                            self.misses, max_backoff=self.timeout
                        )
                        time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None


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
        return _WakingConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue (Dramatiq's own moves from a delay queue, requeues), then wake a consumer."""
        sent = super().enqueue(message, delay=delay)
        wake = f"{self.namespace}:{sent.queue_name}.wake"
        self.client.rpush(wake, 1)
        self.client.ltrim(wake, -64, -1)
        return sent


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
