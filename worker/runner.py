"""Calling handlers: sync ones in the Dramatiq worker thread, async ones on one loop per process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from taskcast.worker import limits
from taskcast.worker.context import TaskContext
from taskcast.worker.errors import TaskCancelled
from taskcast.worker.registry import KindSpec

_local = threading.local()


def current() -> tuple[dict[str, Any], TaskContext] | None:
    """The payload and context of the attempt this thread is running (set by the middleware)."""
    return getattr(_local, "run", None)


def set_current(run: tuple[dict[str, Any], TaskContext] | None) -> None:
    """Set or clear the attempt this thread runs."""
    _local.run = run


class LoopThread:
    """One asyncio loop in a daemon thread, shared by the async handlers of a process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="taskcast-async", daemon=True
                ).start()
            return self._loop

    def run(self, coro_fn: Callable[[], Any], ctx: TaskContext) -> Any:
        """Run a coroutine to completion; a cancel request cancels it.

        Waits in short slices so that Dramatiq's TimeLimit (an exception raised in this thread)
        lands promptly; whatever stops the wait also cancels the coroutine.
        """
        loop = self.loop()
        future = asyncio.run_coroutine_threadsafe(coro_fn(), loop)

        def cancel() -> None:
            loop.call_soon_threadsafe(future.cancel)

        ctx.on_cancel(cancel)
        try:
            while True:
                try:
                    return future.result(timeout=0.1)
                except concurrent.futures.TimeoutError:
                    continue
        except concurrent.futures.CancelledError:
            raise TaskCancelled(f"task {ctx.task_id} was cancelled") from None
        finally:
            future.cancel()


_loop_thread = LoopThread()


def take_result() -> str:
    """The JSON result the last attempt on this thread produced."""
    result: str = _local.result
    _local.result = None
    return result


def make_actor_fn(spec: KindSpec) -> Callable[[], None]:
    """The function Dramatiq calls for a message of this kind; keeps the JSON result aside.

    It returns None: a return value would make Dramatiq warn about its Results middleware.
    """

    def run_attempt() -> None:
        run = current()
        if run is None:  # only when a message bypassed the Lifecycle middleware
            raise RuntimeError("taskcast actor called without the Lifecycle middleware")
        payload, ctx = run
        if spec.is_async:
            result = _loop_thread.run(lambda: spec.handler(payload, ctx), ctx)
        else:
            result = spec.handler(payload, ctx)
        _local.result = limits.encode_result(result, ctx.limits.max_result_bytes)

    run_attempt.__name__ = spec.kind.replace(".", "_")
    return run_attempt
