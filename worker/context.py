"""What a handler receives besides its payload: progress, output, cancellation, run-once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskcast.worker import metrics
from taskcast.worker.errors import TaskCancelled
from taskcast.worker.limits import Limits, clip, split_output

if TYPE_CHECKING:
    from taskcast.worker.store import WorkerStore

__all__ = ["TaskContext"]

# Where an async attempt's events go instead of a blocking store call: (ctx, n, fields).
Sink = Callable[["TaskContext", int, list[str]], None]


class TaskContext:
    """The running attempt of one task, as its handler sees it."""

    def __init__(
        self,
        store: WorkerStore,
        *,
        task_id: str,
        kind: str,
        attempt: int,
        max_attempts: int,
        limits: Limits = Limits(),  # noqa: B008 (frozen: one shared default is safe)
        sink: Sink | None = None,
    ) -> None:
        self.task_id = task_id
        self.kind = kind
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.limits = limits
        self._store = store
        self._sink = sink
        # A flag, not a threading.Event: nothing waits on it, and an Event (a Condition and its
        # lock) per attempt was 1.3% of the workers' CPU under batch load.
        self._cancelled = False
        self._on_cancel: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._n = 0
        self.began = time.monotonic()  # the attempt's start, for its run time and first output
        self._first_output = True
        self.tokens = -1  # reported by `used_tokens`; -1: none

    @property
    def cancelled(self) -> bool:
        """Whether a caller asked to cancel this task."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raise `TaskCancelled` if a caller asked to cancel; call it between steps of long work."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress: `fraction` from 0 to 1, and a short message."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        message = clip(message, self.limits.max_output_bytes)
        self._emit(["type", "progress", "fraction", repr(fraction), "message", message])

    def output(self, text: str) -> None:
        """Append partial output (e.g. generated tokens); watchers see it in order.

        In a sync handler this is one blocking Redis call (about 0.1-0.3 ms; it waits out a Redis
        outage). In an `async def` handler it never blocks: the write is queued and sent with the
        other attempts' writes in one pipeline. Coalesce many tiny pieces, as `ai.chat` does.
        Text longer than `TASKCAST_MAX_OUTPUT_BYTES` becomes several events, in order.
        """
        if text:
            if self._first_output:
                self._first_output = False
                metrics.first_output(self.kind, time.monotonic() - self.began)
            for piece in split_output(text, self.limits.max_output_bytes):
                self._emit(["type", "output", "text", piece])

    def used_tokens(self, n: int) -> None:
        """Report `n` tokens this attempt used (more calls add up), as the provider counted them.

        Under the kind's token budget (`@task(tokens=Tokens(...))`) they replace the attempt's
        reservation when it ends; without a report the reservation counts as used.
        """
        self.tokens = max(self.tokens, 0) + max(int(n), 0)

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` at most once per task and key, across attempts and duplicate deliveries.

        The first successful call's JSON result is stored and returned again later. Use it around
        side effects that must not repeat (sending an email, charging a card).
        """
        return self._store.run_once(self.task_id, key, fn)

    def _emit(self, fields: list[str]) -> None:
        with self._lock:
            self._n += 1
            if self._sink is not None:
                self._sink(self, self._n, fields)  # in order: queued under the lock
                return
            cancel = self._store.event(self.task_id, self.attempt, self._n, fields)
        if cancel:
            self.request_cancel()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from another thread) when a cancel arrives; used by async handlers."""
        self._on_cancel.append(callback)
        if self._cancelled:
            callback()

    def request_cancel(self) -> None:
        """Mark this attempt cancelled and notify callbacks (the worker calls this)."""
        if not self._cancelled:
            self._cancelled = True
            for callback in self._on_cancel:
                callback()
