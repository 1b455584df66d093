"""The Celery baseline: Celery on Redis with its defaults, no result backend, a no-op task.

Run by `celery -A bench._celery_app worker`; the benchmark calls `.delay()` from a plain process.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTED = "bench:started"

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
)
_client = redis.Redis.from_url(URL)


@app.task(name="bench.noop")
def noop(n: int) -> None:
    """Do nothing."""


@app.task(name="bench.mark")
def mark(token: str) -> None:
    """Say when this task started (wall clock), for the hand-off benchmark."""
    started = time.time()
    _client.publish(STARTED, f"{token} {started!r}")
