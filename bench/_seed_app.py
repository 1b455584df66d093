"""The seed's design, the baseline of bench.seed: a FastAPI app in front of Celery on Redis.

POST /tasks enqueues the no-op task and answers `{"task_id", "status": "PENDING"}`; GET
/tasks/{id} answers its state from the result backend (Redis too). Served by
`uvicorn bench._seed_app:api`, worked by `celery -A bench._seed_app worker`; both read the Redis
URL from BENCH_REDIS_URL. The handlers are plain `def`s, the usual way to call Celery's blocking
client from FastAPI (it runs them in its thread pool).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.result import AsyncResult
from fastapi import FastAPI

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("seed", broker=URL, backend=URL)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
)
api = FastAPI()


@app.task(name="bench.noop")
def noop(n: int) -> None:
    """Do nothing (its SUCCESS state and result go to the backend)."""


@api.post("/tasks")
def create() -> dict[str, str]:
    """Enqueue one no-op task."""
    result = noop.delay(0)
    return {"task_id": result.id, "status": "PENDING"}


@api.get("/tasks/{task_id}")
def state(task_id: str) -> dict[str, str]:
    """The task's state as the result backend has it (PENDING until the worker stores one)."""
    return {"task_id": task_id, "status": AsyncResult(task_id, app=app).state}
