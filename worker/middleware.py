"""The one middleware that turns every Dramatiq lifecycle step into a task event."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage, TimeLimitExceeded

from taskcast.core import calls, mqlayout
from taskcast.core.calls import Held, Outcome, Skipped, Status
from taskcast.core.limits import TokenLimit
from taskcast.core.records import TaskError
from taskcast.core.states import State
from taskcast.worker import attempt as attempts
from taskcast.worker import metrics, traces, transport
from taskcast.worker.aio import AsyncAttempts, WorkerShutdown
from taskcast.worker.attempt import Attempt
from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError, RetryAfter, TaskCancelled
from taskcast.worker.limits import Limits
from taskcast.worker.registry import KindSpec, Registry
from taskcast.worker.settings import WorkerSettings
from taskcast.worker.store import WorkerStore
from taskcast.worker.writer import Writer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("taskcast.worker")

# A task held back by a limit waits on its delay queue: at first 0.2 s, doubling up to 2 s while a
# concurrency limit stays full (a rate limit says exactly how long to wait).
HOLD_MIN_MS, HOLD_MAX_MS = 200, 2000
HELD = "tc_held"  # set on a message whose delivery a limit held back: no "skipped" warning


def _quiet_holds(record: logging.LogRecord) -> bool:
    """Drop Dramatiq's "Message ... was skipped." for a delivery a limit held back (routine)."""
    message = record.args[0] if isinstance(record.args, tuple) and record.args else None
    return not getattr(message, "options", {}).get(HELD)


class Lifecycle(Middleware):
    """Starts attempts (`begin`), records outcomes (`finish`) and schedules retries.

    It replaces Dramatiq's Retries: the RETRYING event and the next attempt's message are written
    by one script, so a crash can never leave one without the other. Sync attempts run and finish
    in the worker thread; async ones are handed to the slot loop once the actor returned, and
    finish there through the batched `Writer`.
    """

    def __init__(
        self,
        store: WorkerStore,
        registry: Registry,
        settings: WorkerSettings,
        aio: AsyncAttempts,
        writer: Writer,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.tracer = tracer  # None: tracing is off (core/tracing.py)
        self.registry = registry
        self.settings = settings
        self.aio = aio
        self.writer = writer
        self.running: dict[str, TaskContext] = {}
        self._lock = threading.Lock()
        self._deadline = 0.0
        aio.done = self._complete

    @property
    def actor_options(self) -> set[str]:
        """`throws`: Dramatiq's Retries declared it, and this middleware replaces Retries."""
        return {"throws"}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Start the slot loop and its writer."""
        self.aio.boot()
        asyncio.run_coroutine_threadsafe(self.writer.run(), self.aio.loop)
        logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_quiet_holds)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Take no more work; the shutdown timeout starts now."""
        self._deadline = time.monotonic() + self.settings.shutdown_timeout
        self.aio.slots.close()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Let async attempts finish until the deadline, then hand back the rest."""
        self.aio.drain(self._deadline)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Start the attempt the message carries, or skip a duplicate or stale delivery."""
        task_id, number = message.message_id, int(message.options.get("tc_attempt", 1))
        # `begin` acknowledges the message too: a round trip per task less than Dramatiq's ack
        ack = broker.ack_of(message) if isinstance(broker, transport.Broker) else None
        turn = int(message.options.get("tc_turn") or 0)
        token = os.urandom(16).hex()  # a uuid4's randomness without building a UUID
        tokens = self._token_limit(message.actor_name, task_id)
        started = self.store.begin(
            task_id, number, self.settings.lease_ms, token, turn, ack, tokens
        )
        if isinstance(started, Held):  # not acked by `begin`: Dramatiq's ack, after the copy
            self._hold(broker, message, started)
            raise SkipMessage(f"held back by its {started.reason} limit")
        if ack is not None:
            message.options[transport.ACKED] = True
        if isinstance(started, Skipped):
            log.info("skipping delivery of task %s attempt %d: %s", task_id, number, started.reason)
            raise SkipMessage(started.reason)
        metrics.started(message.actor_name, started.waited_ms)
        spec = self.registry.kinds[message.actor_name]
        ctx = TaskContext(
            self.store,
            task_id=task_id,
            kind=message.actor_name,
            attempt=number,
            max_attempts=started.max_attempts,
            limits=Limits(self.settings.max_result_bytes, self.settings.max_output_bytes),
            sink=self._sink if spec.is_async else None,
        )
        attempt = Attempt(
            task_id=task_id,
            kind=spec.kind,
            number=number,
            queue=mqlayout.canonical(message.queue_name),
            timeout_ms=int(message.options.get("time_limit") or 0),
            payload=json.loads(started.payload),
            ctx=ctx,
            is_async=spec.is_async,
            tenant=started.tenant,
        )
        if self.tracer is not None:
            attempt.span = traces.start(self.tracer, attempt, started.trace)
            attempt.span_token = traces.enter(attempt.span)  # a sync handler runs in this thread
        with self._lock:
            self.running[task_id] = ctx
        attempts.set_current(attempt)

    def _token_limit(self, kind: str, task_id: str) -> TokenLimit | None:
        """The kind's token budget for this task, its key built from the payload: one Redis read
        more per delivery when the key names a payload field (an `ai.chat` call takes seconds)."""
        spec = self.registry.kinds.get(kind)
        budget = spec.token_budget() if spec is not None else None
        if budget is None:
            return None
        return budget.of(kind, self.store.payload(task_id) if budget.from_payload else {})

    def _hold(self, broker: Any, message: Any, held: Held) -> None:
        """Put a delivery a limit held back on its delay queue, to try again after the wait."""
        tries = int(message.options.get("tc_holds") or 0)
        if tries == 0:
            metrics.limit_wait(message.actor_name, held.reason, held.tenant)
        delay = held.wait_ms or min(HOLD_MIN_MS * 2**tries, HOLD_MAX_MS)
        options = {"tc_holds": tries + 1, "tc_turn": held.turn or None}
        again = message.copy(options=options)
        # Through a Redis blip too: an error here would dead-letter the only message of the task.
        self.store.persist("hold", lambda: broker.defer(message.queue_name, again, max(1, delay)))
        message.options[HELD] = True

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Nothing ran: forget the attempt of this thread, if any."""
        attempt = attempts.current()
        if attempt is not None and attempt.span_token is not None:
            traces.leave(attempt.span_token)
        attempts.set_current(None)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Hand an async attempt to the slot loop; record how a sync one ended."""
        attempt = attempts.current()
        if attempt is None:
            return
        attempts.set_current(None)
        if attempt.span_token is not None:
            traces.leave(attempt.span_token)
            attempt.span_token = None
        spec = self.registry.kinds[attempt.kind]
        if attempt.is_async and exception is None:
            self.aio.start(attempt, spec.handler)
            return
        with self._lock:
            self.running.pop(attempt.task_id, None)
        outcome = replace(self._outcome(spec, attempt, exception), tokens=attempt.ctx.tokens)
        self._ended(attempt, outcome, self.store.finish(self._finish(attempt, outcome)))

    async def _complete(self, attempt: Attempt, exception: BaseException | None) -> None:
        """Record how an async attempt ended (on the slot loop, batched with other writes)."""
        spec = self.registry.kinds[attempt.kind]
        outcome = replace(self._outcome(spec, attempt, exception), tokens=attempt.ctx.tokens)
        try:
            reply = await self.writer.call(self._finish(attempt, outcome))
            self._ended(attempt, outcome, calls.finish_reply(reply))
        except Exception:  # a script error: logged; the lease and reaper still end the task
            log.exception(
                "task %s: recording the outcome of attempt %d failed",
                attempt.task_id,
                attempt.number,
            )
        finally:
            with self._lock:
                self.running.pop(attempt.task_id, None)

    def _finish(self, attempt: Attempt, outcome: Outcome) -> calls.Call:
        """The `finish` call that records `outcome` (with the next attempt's message)."""
        return calls.finish(
            self.store.layout,
            attempt.task_id,
            attempt.number,
            outcome,
            kind=attempt.kind,
            queue=attempt.queue,
            timeout_ms=attempt.timeout_ms,
        )

    def _sink(self, ctx: TaskContext, n: int, fields: list[str]) -> None:
        call = calls.event(self.store.layout, ctx.task_id, ctx.attempt, n, fields)
        self.aio.on_loop(self._queue_event, ctx, call)

    def _queue_event(self, ctx: TaskContext, call: calls.Call) -> None:
        def on_reply(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            if calls.event_reply(future.result()).cancel_requested:
                ctx.request_cancel()

        self.writer.call(call).add_done_callback(on_reply)

    def _ended(self, attempt: Attempt, outcome: Outcome, state: State | None) -> None:
        """Log how the attempt ended and end its span."""
        self._log(attempt, outcome, state)
        if attempt.span is not None:
            traces.end(attempt.span, attempt, outcome, state)

    @staticmethod
    def _log(attempt: Attempt, outcome: Outcome, state: State | None) -> None:
        metrics.attempt_ended(attempt, outcome, state)
        # Named explicitly: a sync attempt is no longer current here (AttemptFilter).
        extra = {"task_id": attempt.task_id, "kind": attempt.kind, "attempt": attempt.number}
        if outcome.error is None:
            log.debug(
                "task %s attempt %d: %s", attempt.task_id, attempt.number, _now(state), extra=extra
            )
            return
        err = outcome.error
        log.warning(
            "task %s (%s) attempt %d failed: %s: %s; now %s",
            attempt.task_id,
            attempt.kind,
            attempt.number,
            err.type,
            err.message,
            _now(state),
            extra=extra,
        )

    def _outcome(self, spec: KindSpec, attempt: Attempt, exc: BaseException | None) -> Outcome:
        ctx = attempt.ctx
        if exc is None:
            return Outcome(Status.OK, result=attempt.result or "null")
        if isinstance(exc, TaskCancelled) or ctx.cancelled:
            return Outcome(Status.CANCELLED)
        name = type(exc).__name__
        if isinstance(exc, TimeLimitExceeded):
            return Outcome(
                Status.ERROR,
                error=TaskError("TimeLimitExceeded", "the attempt ran past its time limit", False),
            )
        if isinstance(exc, WorkerShutdown):  # handed back: the next attempt may start at once
            return Outcome(Status.ERROR, error=TaskError(name, str(exc), True))
        if isinstance(exc, (NonRetryableError, *spec.non_retryable)):
            return Outcome(Status.ERROR, error=TaskError(name, str(exc), False))
        delay = self._backoff(spec, attempt.number)
        if isinstance(exc, RetryAfter):
            delay = max(delay, exc.delay)
        return Outcome(
            Status.ERROR, error=TaskError(name, str(exc), True), retry_delay_ms=int(delay * 1000)
        )

    def _backoff(self, spec: KindSpec, number: int) -> float:
        low, high = spec.retry_backoff or (
            self.settings.retry_min_backoff,
            self.settings.retry_max_backoff,
        )
        # "Equal jitter": at least half the exponential step, so retries spread but never bunch.
        step = min(high, low * 2 ** (number - 1))
        return float(step / 2 + random.uniform(0, step / 2))


def _now(state: State | None) -> str:
    """The state a finish moved the task to, for the log ("stale": the attempt lost the task)."""
    return "stale" if state is None else state.value
