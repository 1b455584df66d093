"""The running attempt as one object, carried in a ContextVar (Dramatiq's `CurrentMessage` model).

Many async attempts share one thread now, so nothing about an attempt may live in a thread-local:
its payload, context and result travel in `Attempt`, and `current()` finds the one whose code is
running, in a worker thread (sync kinds) or in an asyncio task on the slot loop (async kinds).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.worker import limits
from taskcast.worker.context import TaskContext

__all__ = ["Attempt", "current"]


@dataclass
class Attempt:
    """One delivery of a task that `begin` allowed to run."""

    task_id: str
    kind: str
    number: int
    queue: str
    timeout_ms: int
    payload: dict[str, Any]
    ctx: TaskContext
    is_async: bool = False
    tenant: str = DEFAULT_TENANT  # whose task it is (metrics count by tenant)
    result: str | None = None  # the JSON result, once the handler returned
    handed_off: bool = field(default=False)  # an async attempt now runs on the slot loop
    span: Any = None  # its OpenTelemetry span, when tracing is on (worker/traces.py)
    span_token: object = None  # the span made current in the worker thread, until the attempt ends

    def encode(self, result: Any) -> str:
        """The handler's return value as the JSON the task records, within this worker's bound."""
        return limits.encode_result(result, self.ctx.limits.max_result_bytes)


_current: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "taskcast_attempt", default=None
)


def current() -> Attempt | None:
    """The attempt whose code is running here (worker thread or asyncio task), if any."""
    return _current.get()


def set_current(attempt: Attempt | None) -> contextvars.Token[Attempt | None]:
    """Make `attempt` the current one in this context; returns a token for `reset`."""
    return _current.set(attempt)
