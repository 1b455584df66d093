"""The one middleware that turns every Dramatiq lifecycle step into a task event."""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage, TimeLimitExceeded

from taskcast.core.records import TaskError
from taskcast.worker import runner
from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError, RetryAfter, TaskCancelled
from taskcast.worker.limits import Limits
from taskcast.worker.registry import KindSpec, Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import Outcome, WorkerStore

log = logging.getLogger("taskcast.worker")


class Lifecycle(Middleware):
    """Starts attempts (`begin`), records outcomes (`finish`) and schedules retries.

    It replaces Dramatiq's Retries: the RETRYING event and the next attempt's message are written
    by one script, so a crash can never leave one without the other.
    """

    def __init__(self, store: WorkerStore, registry: Registry, settings: WorkerSettings) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.running: dict[str, TaskContext] = {}
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        """`throws`: Dramatiq's Retries declared it, and this middleware replaces Retries."""
        return {"throws"}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Start the attempt the message carries, or skip a duplicate or stale delivery."""
        task_id, attempt = message.message_id, int(message.options.get("tc_attempt", 1))
        started = self.store.begin(task_id, attempt, self.settings.lease_ms, uuid.uuid4().hex)
        if isinstance(started, str):
            log.info("skipping delivery of task %s attempt %d: %s", task_id, attempt, started)
            raise SkipMessage(started)
        ctx = TaskContext(
            self.store,
            task_id=task_id,
            kind=message.actor_name,
            attempt=attempt,
            max_attempts=started.max_attempts,
            limits=Limits(self.settings.max_result_bytes, self.settings.max_output_bytes),
        )
        with self._lock:
            self.running[task_id] = ctx
        runner.set_current((json.loads(started.payload), ctx))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Record success, failure or cancellation; schedule the next attempt when allowed."""
        run = runner.current()
        if run is None:
            return
        runner.set_current(None)
        _, ctx = run
        with self._lock:
            self.running.pop(ctx.task_id, None)
        spec = self.registry.kinds[message.actor_name]
        outcome = self._outcome(spec, ctx, result, exception)
        state = self.store.finish(
            ctx.task_id,
            ctx.attempt,
            outcome,
            kind=spec.kind,
            queue=message.queue_name.removesuffix(".DQ"),
            timeout_ms=int(message.options.get("time_limit") or 0),
        )
        if outcome.error is None:
            log.debug("task %s attempt %d: %s", ctx.task_id, ctx.attempt, state)
        else:
            err = outcome.error
            log.warning(
                "task %s (%s) attempt %d failed: %s: %s; now %s",
                ctx.task_id,
                spec.kind,
                ctx.attempt,
                err.type,
                err.message,
                state,
            )

    def _outcome(
        self, spec: KindSpec, ctx: TaskContext, result: Any, exc: BaseException | None
    ) -> Outcome:
        if exc is None:
            return Outcome("ok", result=runner.take_result())
        if isinstance(exc, TaskCancelled) or ctx.cancelled:
            return Outcome("cancelled")
        name = type(exc).__name__
        if isinstance(exc, TimeLimitExceeded):
            return Outcome(
                "error",
                error=TaskError("TimeLimitExceeded", "the attempt ran past its time limit", False),
            )
        if isinstance(exc, (NonRetryableError, *spec.non_retryable)):
            return Outcome("error", error=TaskError(name, str(exc), False))
        delay = self._backoff(spec, ctx.attempt)
        if isinstance(exc, RetryAfter):
            delay = max(delay, exc.delay)
        return Outcome(
            "error", error=TaskError(name, str(exc), True), retry_delay_ms=int(delay * 1000)
        )

    def _backoff(self, spec: KindSpec, attempt: int) -> float:
        low, high = spec.retry_backoff or (
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        )
        # "Equal jitter": at least half the exponential step, so retries spread but never bunch.
        step = min(high, low * 2 ** (attempt - 1))
        return float(step / 2 + random.uniform(0, step / 2))
