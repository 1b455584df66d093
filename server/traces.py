"""SubmitTask's producer span, and the trace context a task carries to its attempts.

A caller's W3C `traceparent` arrives as gRPC metadata (what OpenTelemetry's own gRPC
instrumentation sends, so any client can, with no change to the proto). With tracing on, the
submit is a PRODUCER span (messaging semantic conventions) under it, and the task stores that
span's context; with tracing off, the task stores the caller's traceparent as it came, so a
traced worker still continues the caller's trace.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from taskcast.core import tracing
from taskcast.core.calls import NewTask
from taskcast.core.records import TaskRecord
from taskcast.server.errors import ServiceError
from taskcast.server.store import ServerStore

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["submit", "submit_many", "parent_of"]


def parent_of(metadata: Any) -> str:
    """The valid `traceparent` among a call's invocation metadata, else ""."""
    for key, value in metadata or ():
        if key == "traceparent":
            return tracing.traceparent(value if isinstance(value, str) else value.decode())
    return ""


async def submit(
    store: ServerStore, tracer: Tracer | None, task_id: str, new: NewTask, parent: str
) -> tuple[TaskRecord, bool]:
    """`store.submit`, traced when `tracer` is given; the task keeps the context to continue."""
    if tracer is None:
        return await store.submit(task_id, replace(new, trace=parent))
    from opentelemetry.trace import SpanKind

    attributes = {
        **_SEND,
        "messaging.destination.name": new.queue,
        "taskcast.task.kind": new.kind,
    }
    with tracer.start_as_current_span(
        f"send {new.queue}",
        context=tracing.context_of(parent),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        record, created = await store.submit(
            task_id, replace(new, trace=tracing.traceparent_of(span))
        )
        span.set_attribute("messaging.message.id", record.id)
        span.set_attribute("taskcast.task.created", created)
        return record, created


_SEND = {
    "messaging.system": "taskcast",
    "messaging.operation.type": "send",
    "messaging.operation.name": "submit",
}


async def submit_many(
    store: ServerStore, tracer: Tracer | None, items: list[tuple[str, NewTask]], parent: str
) -> list[tuple[TaskRecord, bool] | ServiceError]:
    """`store.submit_many`: with tracing on, one PRODUCER span for the batch, whose context every
    task of it carries; else each task carries the caller's traceparent."""
    if tracer is None:
        return await store.submit_many([(i, replace(n, trace=parent)) for i, n in items])
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str | int] = {**_SEND, "messaging.batch.message_count": len(items)}
    with tracer.start_as_current_span(
        "send batch",
        context=tracing.context_of(parent),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        trace = tracing.traceparent_of(span)
        return await store.submit_many([(i, replace(n, trace=trace)) for i, n in items])
