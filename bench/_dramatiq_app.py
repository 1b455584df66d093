"""The raw Dramatiq baseline: a stock RedisBroker and a no-op actor, nothing of taskcast.

Run by `dramatiq bench._dramatiq_app`; the benchmark sends from a plain process.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTED = "bench:started"

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(URL)


@dramatiq.actor(actor_name="bench_noop", queue_name="default", max_retries=0)
def noop(n: int) -> None:
    """Do nothing."""


@dramatiq.actor(actor_name="bench_mark", queue_name="default", max_retries=0)
def mark(token: str) -> None:
    """Say when this message started (wall clock), for the hand-off benchmark."""
    started = time.time()
    _client.publish(STARTED, f"{token} {started!r}")
