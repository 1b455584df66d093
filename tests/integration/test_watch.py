"""WatchTask at scale and at the edges: many watchers, trimmed history, health, reflection."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskcast.client import AsyncTaskClient, Event, TaskClient, TaskState
from taskcast.core.layout import Layout

pytestmark = pytest.mark.usefixtures("worker")


async def test_200_watchers_on_200_tasks_all_see_complete_streams(grpc_addr: str) -> None:
    async with AsyncTaskClient(grpc_addr, reconnect_for=30) as client:
        handles = await asyncio.gather(
            *(client.submit("demo.sleep", {"seconds": 0.3, "steps": 3}) for _ in range(200))
        )

        async def collect(handle: Any) -> list[Event]:
            return [e async for e in handle.watch()]

        streams = await asyncio.wait_for(asyncio.gather(*(collect(h) for h in handles)), 120)
    for events in streams:
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[-1].state is TaskState.SUCCEEDED
        assert [e.progress for e in events if e.type == "progress"] == pytest.approx(
            [1 / 3, 2 / 3, 1.0]
        )


async def test_async_client_round_trip(grpc_addr: str) -> None:
    async with AsyncTaskClient(grpc_addr) as client:
        handle = await client.submit("test.echo", {"n": 1}, labels={"via": "aio"})
        assert await handle.wait(timeout=20) == {"payload": {"n": 1}, "attempt": 1}
        assert (await handle.get()).state is TaskState.SUCCEEDED
        listed = [t.id async for t in client.list(labels={"via": "aio"})]
        assert listed == [handle.id]
        stats = await client.stats()
        assert any(k.kind == "test.echo" for k in stats.kinds)


def test_trimmed_history_is_announced_not_skipped(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    handle = client.submit("test.chatty", {"n": 10})
    handle.wait(timeout=20)
    last = handle.get().last_sequence
    # Retention trimmed the oldest events (as MAXLEN does on a long stream).
    rdb.xtrim(Layout(prefix).events(handle.id), minid=f"{last - 3}-0", approximate=False)
    events = list(handle.watch())
    assert events[0].type == "events_trimmed"
    assert events[0].first_available_sequence == last - 3
    assert [e.sequence for e in events[1:]] == [last - 3, last - 2, last - 1, last]
    # A watcher that had seen past the trimmed part is not bothered.
    assert [e.sequence for e in handle.watch(after_sequence=last - 2)] == [last - 1, last]


def test_health_and_reflection_are_served(grpc_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(grpc_channel)
    for service in ("", "taskcast.v1.TaskService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"taskcast.v1.TaskService", "grpc.health.v1.Health"} <= names


def test_raw_stub_speaks_the_proto(grpc_stub: Any) -> None:
    from taskcast.v1 import tasks_pb2 as pb

    task = grpc_stub.SubmitTask(
        pb.SubmitTaskRequest(kind="test.echo", payload_json='{"k": 1}'), timeout=10
    ).task
    assert task.state == pb.TASK_STATE_PENDING
    events = list(grpc_stub.WatchTask(pb.WatchTaskRequest(task_id=task.id), timeout=20))
    assert events[-1].state_changed.state == pb.TASK_STATE_SUCCEEDED
    assert events[-1].state_changed.result_json == '{"payload": {"k": 1}, "attempt": 1}'
