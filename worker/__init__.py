"""Writing task kinds: the `@task` decorator, the handler's context and the errors it may raise.

    from taskcast.worker import task, TaskContext

    @task("report.build", queue="reports", max_attempts=5, timeout=120)
    def build(payload: dict, ctx: TaskContext) -> dict:
        ctx.progress(0.5, "half way")
        return {"url": "..."}

Run `taskcast worker your.module` to serve it (plus the built-in kinds).
"""

from __future__ import annotations

from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError, RetryAfter, TaskCancelled, TaskcastError
from taskcast.worker.registry import Concurrency, Rate, Tokens, task

__all__ = [
    # writing kinds
    "TaskContext",
    "task",
    # per-key limits
    "Concurrency",
    "Rate",
    "Tokens",
    # steering retries
    "NonRetryableError",
    "RetryAfter",
    "TaskCancelled",
    "TaskcastError",
]
