"""The `@task` decorator: task kinds as plain functions, bound to a Dramatiq broker at boot."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from taskcast.core.kinds import DEFAULT_QUEUE
from taskcast.worker.errors import NonRetryableError, RetryAfter, TaskCancelled

__all__ = ["KindSpec", "Registry", "registry", "task"]

Handler = Callable[..., Any]


@dataclass(frozen=True)
class KindSpec:
    """One task kind: its handler and defaults (None means the worker's default)."""

    kind: str
    handler: Handler
    queue: str = DEFAULT_QUEUE
    max_attempts: int | None = None
    timeout: float | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    retry_backoff: tuple[float, float] | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))


class Registry:
    """Known kinds; binds each as a Dramatiq actor once a broker is set (now or later)."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindSpec] = {}
        self._broker: dramatiq.Broker | None = None
        self._runner: Callable[[KindSpec], Callable[[], Any]] | None = None

    def add(self, spec: KindSpec) -> None:
        """Register a kind; a second registration of the same kind replaces the first."""
        self.kinds[spec.kind] = spec
        if self._broker is not None:
            self._bind(spec)

    def bind(
        self, broker: dramatiq.Broker, runner: Callable[[KindSpec], Callable[[], Any]]
    ) -> None:
        """Make every kind, known now or added later, an actor on `broker` run by `runner`."""
        self._broker, self._runner = broker, runner
        for spec in self.kinds.values():
            self._bind(spec)

    def _bind(self, spec: KindSpec) -> None:
        assert self._broker is not None and self._runner is not None
        # actor_name is the kind itself: renaming the Python function never orphans messages.
        dramatiq.Actor(
            self._runner(spec),
            broker=self._broker,
            actor_name=spec.kind,
            queue_name=spec.queue,
            priority=0,
            # Expected outcomes (retry later, fail, cancelled) are logged as such, not as crashes.
            # Not the shared TaskcastError root: a client error inside a handler (a sub-task's
            # submit failing) is a crash worth its traceback.
            options={"throws": (NonRetryableError, RetryAfter, TaskCancelled)},
        )


registry = Registry()


def task(
    kind: str,
    *,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int | None = None,
    timeout: float | None = None,
    non_retryable: tuple[type[BaseException], ...] = (),
    retry_backoff: tuple[float, float] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a function as the handler of a task kind.

    The handler is `fn(payload: dict, ctx: TaskContext) -> JSON-serialisable result`, sync or
    `async def`.

    Args:
        kind: The name callers submit, e.g. "report.build".
        queue: Dramatiq queue its tasks go to by default.
        max_attempts: Attempts per task, first included (default: the worker's setting).
        timeout: Time limit of one attempt in seconds (default: the worker's setting).
        non_retryable: Exception types that fail the task at once.
        retry_backoff: (first delay, longest delay) in seconds between attempts.

    Returns:
        The function itself, unchanged.
    """
    if not kind or len(kind) > 128:
        raise ValueError("kind must be 1 to 128 characters")

    def decorate(fn: Handler) -> Handler:
        registry.add(KindSpec(kind, fn, queue, max_attempts, timeout, non_retryable, retry_backoff))
        return fn

    return decorate
