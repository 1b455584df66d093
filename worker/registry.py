"""The `@task` decorator: task kinds as plain functions, bound to a Dramatiq broker at boot."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from pydantic import BaseModel, ValidationError

from taskcast.core.kinds import DEFAULT_QUEUE, canonical
from taskcast.core.limits import Concurrency, Rate, Tokens
from taskcast.worker.errors import NonRetryableError, RetryAfter, TaskCancelled

__all__ = ["Concurrency", "KindSpec", "Rate", "Registry", "Tokens", "registry", "task"]

Handler = Callable[..., Any]


@dataclass(frozen=True)
class KindSpec:
    """One task kind: its handler, defaults (None means the worker's default) and payload model."""

    kind: str
    handler: Handler
    queue: str = DEFAULT_QUEUE
    max_attempts: int | None = None
    timeout: float | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    retry_backoff: tuple[float, float] | None = None
    payload: type[BaseModel] | None = None
    concurrency: Concurrency | None = None
    rate: Rate | None = None
    # A budget, or a function that returns one from this worker's settings (None: no budget).
    tokens: Tokens | Callable[[], Tokens | None] | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))

    def token_budget(self) -> Tokens | None:
        """The kind's token budget in this worker, if any."""
        return self.tokens() if callable(self.tokens) else self.tokens

    def schema(self) -> str:
        """The payload model's JSON schema as canonical text; "" when the kind declares none."""
        return "" if self.payload is None else _schema(self.payload)


@functools.cache
def _schema(model: type[BaseModel]) -> str:
    # Cached: the registrar writes every kind's record each 10 s, and a schema never changes
    # within a process.
    return canonical(model.model_json_schema())


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
    payload: type[BaseModel] | None = None,
    payload_model: bool = False,
    concurrency: Concurrency | None = None,
    rate: Rate | None = None,
    tokens: Tokens | Callable[[], Tokens | None] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a function as the handler of a task kind.

    The handler is `fn(payload: dict, ctx: TaskContext) -> JSON-serialisable result`, sync or
    `async def`.

    With `payload=Model` (a pydantic model), workers register the model's JSON schema with the
    kind and servers refuse, at submit, a payload that does not match it (INVALID_ARGUMENT naming
    each bad field). The handler still receives the payload as a dict, unless `payload_model` is
    set: it then receives `Model.model_validate(payload)`, and a payload the model refuses (one
    the schema cannot express, or submitted before a worker registered the schema) fails the
    task without retry.

    Args:
        kind: The name callers submit, e.g. "report.build".
        queue: Dramatiq queue its tasks go to by default.
        max_attempts: Attempts per task, first included (default: the worker's setting).
        timeout: Time limit of one attempt in seconds (default: the worker's setting).
        non_retryable: Exception types that fail the task at once.
        retry_backoff: (first delay, longest delay) in seconds between attempts.
        payload: The pydantic model of the payload (default: any JSON object).
        payload_model: Hand the handler the validated model instead of the dict.
        concurrency: At most this many attempts per key run at once, across all workers, e.g.
            `Concurrency(3, key="{payload.customer}")` (key None: one limit for the kind). A
            submit's own concurrency key and limit replace it.
        rate: At most this many attempts per key start per second or minute, across all
            workers, e.g. `Rate("20/s", key="{payload.account}")`.
        tokens: A token budget per key, e.g. `Tokens("90000/m", key="{payload.model}")`: an
            attempt starts only while the tokens its key's attempts reported
            (`ctx.used_tokens`) within the last period leave room. Or a function returning
            one (or None), called when a task arrives: for a budget from the worker's settings.

    Returns:
        The function itself, unchanged.
    """
    if not kind or len(kind) > 128:
        raise ValueError("kind must be 1 to 128 characters")
    if payload_model and payload is None:
        raise ValueError("payload_model needs a payload model: @task(..., payload=Model)")

    def decorate(fn: Handler) -> Handler:
        handler = _typed(kind, fn, payload) if payload is not None and payload_model else fn
        spec = KindSpec(
            kind,
            handler,
            queue,
            max_attempts,
            timeout,
            non_retryable,
            retry_backoff,
            payload,
            concurrency,
            rate,
            tokens,
        )
        registry.add(spec)
        return fn

    return decorate


def _typed(kind: str, fn: Handler, model: type[BaseModel]) -> Handler:
    """`fn` called with the payload validated into `model`, sync or async as `fn` is."""

    def parse(payload: dict[str, Any]) -> BaseModel:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise NonRetryableError(f"invalid {kind} payload: {exc}") from None

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(payload: dict[str, Any], ctx: Any) -> Any:
            return await fn(parse(payload), ctx)

        return run_async

    @functools.wraps(fn)
    def run(payload: dict[str, Any], ctx: Any) -> Any:
        return fn(parse(payload), ctx)

    return run
