"""Async attempts as coroutines on one event loop per worker process, each holding a slot.

A worker thread hands an async attempt over (`start`) and returns at once, so Dramatiq acknowledges
its message then: from there on a crash is recovered by taskcast's lease and reaper, not by
Dramatiq. The attempt's time limit is an `asyncio.timeout`, a cancel request cancels its task, and
its outcome is written through the batched `Writer` when the coroutine ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dramatiq.middleware import TimeLimitExceeded

from taskcast.worker import attempt as attempts
from taskcast.worker import traces
from taskcast.worker.attempt import Attempt
from taskcast.worker.errors import TaskCancelled
from taskcast.worker.slots import Slots

log = logging.getLogger("taskcast.worker")

__all__ = ["AsyncAttempts", "WorkerShutdown"]

Handler = Callable[[dict[str, Any], Any], Awaitable[Any]]
Done = Callable[[Attempt, BaseException | None], Awaitable[None]]


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed, else asyncio's.

    Every async attempt's I/O runs on this loop: 200 loopback GETs through httpx cost one
    process 0.20-0.26 s of CPU on uvloop against 0.26-0.30 s on asyncio's (2 cores, 2026-12-01).
    """
    try:
        import uvloop
    except ImportError:  # optional (not on Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class WorkerShutdown(Exception):
    """The process stopped before the attempt finished; another worker runs the next one."""


class AsyncAttempts:
    """The slot loop of one worker process and the attempts running on it."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.loop = new_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="taskcast-slots", daemon=True
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._shutting_down = False
        self.done: Done | None = None  # set by the Lifecycle: records an outcome

    def boot(self) -> None:
        """Start the loop's thread (in the worker process, after Dramatiq forked it)."""
        self._thread.start()

    def start(self, attempt: Attempt, handler: Handler) -> None:
        """Run `handler` for `attempt` on the loop; returns at once (from a worker thread)."""
        self.slots.take()
        attempt.handed_off = True
        self.loop.call_soon_threadsafe(self._spawn, attempt, handler)

    def _spawn(self, attempt: Attempt, handler: Handler) -> None:
        context = contextvars.copy_context()
        context.run(attempts.set_current, attempt)
        if attempt.span is not None:  # the handler's own spans become children of the attempt's
            context.run(traces.enter, attempt.span)
        task = self.loop.create_task(self._run(attempt, handler), context=context)
        self._tasks[attempt.task_id] = task
        attempt.ctx.on_cancel(lambda: self.on_loop(task.cancel))

    async def _run(self, attempt: Attempt, handler: Handler) -> None:
        error: BaseException | None = None
        try:
            error = await self._call(attempt, handler)
        finally:
            self._tasks.pop(attempt.task_id, None)
            try:
                assert self.done is not None
                await self.done(attempt, error)
            finally:
                self.slots.give()

    async def _call(self, attempt: Attempt, handler: Handler) -> BaseException | None:
        limit = attempt.timeout_ms / 1000 if attempt.timeout_ms else None
        try:
            async with asyncio.timeout(limit) as scope:
                attempt.result = attempt.encode(await handler(attempt.payload, attempt.ctx))
        except asyncio.CancelledError:
            if self._shutting_down and not attempt.ctx.cancelled:
                return WorkerShutdown("the worker shut down before the attempt finished")
            return TaskCancelled(f"task {attempt.task_id} was cancelled")
        except TimeoutError as exc:
            if scope.expired():
                return TimeLimitExceeded("the attempt ran past its time limit")
            return exc
        except Exception as exc:  # the handler's failure is the attempt's outcome
            return exc
        return None

    def on_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` on the loop: now when called there, else as soon as it can.

        Called from the loop, it runs at once, so a write queued by a handler is ahead of the
        outcome its attempt records next; from another thread, callbacks keep their call order.
        """
        if threading.get_ident() == self._thread.ident:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def running(self) -> int:
        """How many attempts run on the loop now."""
        return len(self._tasks)

    def drain(self, deadline: float) -> None:
        """Let running attempts finish until `deadline` (monotonic); hand back the rest.

        Called from the thread that stops the worker. Attempts still running at the deadline are
        cancelled and recorded as a retryable `WorkerShutdown`, so another worker picks them up
        at once instead of after a lease expiry.
        """
        fut = asyncio.run_coroutine_threadsafe(self._drain(deadline), self.loop)
        try:
            fut.result(max(0.0, deadline - time.monotonic()) + 10)
        except TimeoutError:
            log.warning("%d async attempts did not finish in time", self.running())

    async def _drain(self, deadline: float) -> None:
        tasks = list(self._tasks.values())
        if tasks:
            log.info("waiting for %d async attempts to finish", len(tasks))
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        self._shutting_down = True
        late = [t for t in self._tasks.values() if not t.done()]
        for task in late:
            task.cancel()
        if late:
            log.warning("handing back %d async attempts still running at shutdown", len(late))
            await asyncio.wait(late, timeout=10)
