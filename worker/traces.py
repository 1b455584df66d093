"""One CONSUMER span per attempt, a child of the context stored with its task (the submit's
PRODUCER span, or the caller's own), with the messaging semantic conventions' attributes, the
attempt's outcome, and `gen_ai` attributes for `ai.chat`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from taskcast.core import tracing
from taskcast.core.calls import Outcome
from taskcast.core.states import State
from taskcast.worker.attempt import Attempt

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["start", "enter", "leave", "end"]

AI_CHAT = "ai.chat"


def start(tracer: Tracer, attempt: Attempt, parent: str) -> Span:
    """The attempt's span, started now (it runs from `begin` to `finish`)."""
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "messaging.system": "taskcast",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": attempt.queue,
        "messaging.message.id": attempt.task_id,
        "taskcast.task.id": attempt.task_id,
        "taskcast.task.kind": attempt.kind,
        "taskcast.task.attempt": attempt.number,
    }
    if attempt.kind == AI_CHAT:
        attributes["gen_ai.system"] = "openai"  # the API it speaks (any compatible server)
        attributes["gen_ai.operation.name"] = "chat"
        model = attempt.payload.get("model")
        if isinstance(model, str) and model:
            attributes["gen_ai.request.model"] = model
    return tracer.start_span(
        f"process {attempt.queue}",
        context=tracing.context_of(parent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def enter(span: Span) -> object:
    """Make `span` the current span here (the worker thread, or the attempt's asyncio task), so
    the handler's own spans (httpx, openai, its own tracer) are its children; returns the token
    for `leave`."""
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(span))


def leave(token: object) -> None:
    """Undo `enter` in the same thread or task."""
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]  # the token `attach` returned


def end(span: Span, attempt: Attempt, outcome: Outcome, state: State | None) -> None:
    """Record how the attempt ended (`outcome`, and the task's state after it) and end `span`."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("taskcast.task.outcome", outcome.status.value)
    span.set_attribute("taskcast.task.state", "stale" if state is None else state.value)
    if outcome.error is not None:
        span.set_attribute("error.type", outcome.error.type)
        span.set_status(StatusCode.ERROR, outcome.error.message)
    elif attempt.kind == AI_CHAT and attempt.result:
        model = json.loads(attempt.result).get("model")
        if isinstance(model, str):
            span.set_attribute("gen_ai.response.model", model)
    span.end()
