"""OpenTelemetry: a submit made inside a trace continues in the worker's attempt spans.

The server runs in this process (conftest hosts it on a loop thread), so its spans go to the SDK's
`InMemorySpanExporter` through this process's global provider, set before the server starts. The
worker is a subprocess: `TASKCAST_TEST_SPANS_FILE` makes it append each span as a JSON line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskHandle, TaskSpec
from taskcast.core.layout import Layout
from taskcast.v1 import tasks_pb2 as pb
from tests.support import WorkerProcess, eventually

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@functools.cache
def _exporter() -> InMemorySpanExporter:
    # A process has one global provider, set once: every module of the session shares this one.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture(scope="module", autouse=True)
def spans() -> InMemorySpanExporter:
    """The server's spans (autouse: in place before the module's server starts)."""
    return _exporter()


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the worker writes its spans."""
    return tmp_path_factory.mktemp("spans") / "worker.jsonl"


@pytest.fixture(scope="module")
def worker(redis_server: RedisProcess, prefix: str, spans_file: Path) -> Iterator[WorkerProcess]:
    """A real worker that traces (overrides the conftest's)."""
    env = {"TASKCAST_TEST_SPANS_FILE": str(spans_file)}
    proc = WorkerProcess(redis_server.url, prefix, extra_env=env).start()
    yield proc
    proc.stop()


def producer(spans: InMemorySpanExporter, task_id: str) -> ReadableSpan:
    (span,) = [
        s
        for s in spans.get_finished_spans()
        if s.attributes and s.attributes.get("messaging.message.id") == task_id
    ]
    return span


def attempts(spans_file: Path, task_id: str, n: int) -> list[dict[str, Any]]:
    """The worker's `n` attempt spans of `task_id`, by attempt, once all are written."""

    def found() -> list[dict[str, Any]]:
        lines = spans_file.read_text().splitlines() if spans_file.exists() else []
        mine = [json.loads(ln) for ln in lines]
        mine = [s for s in mine if s["attributes"].get("taskcast.task.id") == task_id]
        return mine if len(mine) == n else []

    out = eventually(found, 20, f"{n} attempt spans of {task_id}")
    return sorted(out, key=lambda s: s["attributes"]["taskcast.task.attempt"])


def hex_id(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


@pytest.mark.usefixtures("worker")
def test_a_submit_in_a_trace_continues_in_the_attempt(
    client: TaskClient, spans: InMemorySpanExporter, spans_file: Path, rdb: redis.Redis, prefix: str
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("api request") as root:
        handle = client.submit("test.echo", {"n": 1})
    assert handle.wait(timeout=20)["payload"] == {"n": 1}
    trace_id = root.get_span_context().trace_id

    send = producer(spans, handle.id)
    assert send.kind is SpanKind.PRODUCER and send.name == "send default"
    assert send.context is not None and send.context.trace_id == trace_id
    assert send.parent is not None and send.parent.span_id == root.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "taskcast",
        "messaging.operation.type": "send",
        "messaging.operation.name": "submit",
        "messaging.destination.name": "default",
        "messaging.message.id": handle.id,
        "taskcast.task.kind": "test.echo",
        "taskcast.task.created": True,
    }
    stored = rdb.hget(Layout(prefix).task(handle.id), "trace")
    flags = int(send.context.trace_flags)
    assert stored == f"00-{trace_id:032x}-{send.context.span_id:016x}-{flags:02x}".encode()

    (run,) = attempts(spans_file, handle.id, 1)
    assert run["kind"] == "SpanKind.CONSUMER" and run["name"] == "process default"
    assert run["context"]["trace_id"] == hex_id(trace_id, 32)
    assert run["parent_id"] == hex_id(send.context.span_id, 16)
    assert run["attributes"] == {
        "messaging.system": "taskcast",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": handle.id,
        "taskcast.task.id": handle.id,
        "taskcast.task.kind": "test.echo",
        "taskcast.task.attempt": 1,
        "taskcast.task.outcome": "ok",
        "taskcast.task.state": "SUCCEEDED",
    }
    assert run["status"]["status_code"] == "UNSET"


@pytest.mark.usefixtures("worker")
def test_each_attempt_is_a_span_with_its_outcome(
    client: TaskClient, spans: InMemorySpanExporter, spans_file: Path
) -> None:
    with trace.get_tracer("tests").start_as_current_span("api request"):
        handle = client.submit("test.flaky", {})
    assert handle.wait(timeout=20) == 2
    send = producer(spans, handle.id)
    assert send.context is not None

    first, second = attempts(spans_file, handle.id, 2)
    for run in (first, second):
        assert run["parent_id"] == hex_id(send.context.span_id, 16)
        assert run["context"]["trace_id"] == hex_id(send.context.trace_id, 32)
    assert first["attributes"]["taskcast.task.outcome"] == "error"
    assert first["attributes"]["taskcast.task.state"] == "RETRYING"
    assert first["attributes"]["error.type"] == "RuntimeError"
    assert first["status"]["status_code"] == "ERROR"
    assert second["attributes"]["taskcast.task.attempt"] == 2
    assert second["attributes"]["taskcast.task.state"] == "SUCCEEDED"


@pytest.mark.usefixtures("worker")
def test_an_async_attempt_is_traced_too(client: TaskClient, spans_file: Path) -> None:
    with trace.get_tracer("tests").start_as_current_span("api request") as root:
        handle = client.submit("test.async_echo", {"a": 1})
    assert handle.wait(timeout=20) == {"a": 1}
    (run,) = attempts(spans_file, handle.id, 1)
    assert run["context"]["trace_id"] == hex_id(root.get_span_context().trace_id, 32)
    assert run["attributes"]["taskcast.task.state"] == "SUCCEEDED"


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("kind", ["test.span", "test.async_span"])
def test_the_attempt_span_is_current_inside_the_handler(
    client: TaskClient, spans_file: Path, kind: str
) -> None:
    # so the spans a handler's own libraries start (httpx, openai, its tracer) are its children
    with trace.get_tracer("tests").start_as_current_span("api request"):
        handle = client.submit(kind, {})
    seen = handle.wait(timeout=20)
    (run,) = attempts(spans_file, handle.id, 1)
    assert seen == {"trace_id": run["context"]["trace_id"], "span_id": run["context"]["span_id"]}


@pytest.mark.usefixtures("worker")
def test_any_grpc_client_sends_traceparent_as_metadata(
    grpc_stub: Any, client: TaskClient, spans: InMemorySpanExporter, spans_file: Path
) -> None:
    parent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    reply = grpc_stub.SubmitTask(
        pb.SubmitTaskRequest(kind="test.echo", payload_json="{}"),
        metadata=[("traceparent", parent)],
        timeout=10,
    )
    send = producer(spans, reply.task.id)
    assert send.context is not None and f"{send.context.trace_id:032x}" == CALLER_TRACE
    assert send.parent is not None and f"{send.parent.span_id:016x}" == CALLER_SPAN
    (run,) = attempts(spans_file, reply.task.id, 1)
    assert run["context"]["trace_id"] == f"0x{CALLER_TRACE}"


@pytest.mark.usefixtures("worker")
def test_a_submit_outside_any_trace_or_with_a_bad_traceparent_starts_one(
    grpc_stub: Any, client: TaskClient, spans: InMemorySpanExporter, spans_file: Path
) -> None:
    plain = client.submit("test.echo", {})
    bad = grpc_stub.SubmitTask(
        pb.SubmitTaskRequest(kind="test.echo", payload_json="{}"),
        metadata=[("traceparent", f"00-{'0' * 32}-{CALLER_SPAN}-01")],
        timeout=10,
    )
    for task_id in (plain.id, bad.task.id):
        send = producer(spans, task_id)
        assert send.parent is None and send.context is not None
        (run,) = attempts(spans_file, task_id, 1)
        assert run["context"]["trace_id"] == hex_id(send.context.trace_id, 32)


@pytest.mark.usefixtures("worker")
def test_a_batch_is_one_producer_span_that_each_of_its_tasks_continues(
    client: TaskClient, spans: InMemorySpanExporter, spans_file: Path
) -> None:
    with trace.get_tracer("tests").start_as_current_span("api request") as root:
        handles = client.submit_many([TaskSpec("test.echo", {"n": n}) for n in range(3)])
    ids = [h.id for h in handles if isinstance(h, TaskHandle)]
    assert len(ids) == 3
    (send,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == "send batch" and s.parent is not None
        and s.parent.span_id == root.get_span_context().span_id
    ]  # fmt: skip
    assert send.kind is SpanKind.PRODUCER and send.context is not None
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    for task_id in ids:
        (run,) = attempts(spans_file, task_id, 1)
        assert run["parent_id"] == hex_id(send.context.span_id, 16)
        assert run["context"]["trace_id"] == hex_id(root.get_span_context().trace_id, 32)
