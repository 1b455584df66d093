"""A client a web app cannot misuse, and watchers you can see (issue 14, items 4 and 5).

The module's server admits at most 3 watch streams, so a stream the client fails to close shows
up in GetStats' `watch_streams_open` and in the limit, as it would in a web app's server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import (
    AsyncTaskClient,
    Event,
    ResourceExhaustedError,
    TaskClient,
    TaskHandle,
    WrongLoopError,
)
from taskcast.server.config import ServerSettings
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")
MAX_WATCHERS = 3


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """The conftest's settings with room for 3 watchers."""
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        keepalive=0.3,
        grace=1.0,
        max_watchers=MAX_WATCHERS,
    )


@pytest.fixture
def pending(client: TaskClient) -> Iterator[TaskHandle]:
    """A task that stays PENDING for the test (its first event comes at once, then nothing),
    with no watcher left open from an earlier test."""
    eventually(lambda: client.stats().watch_streams_open == 0, what="no watch streams open")
    handle = client.submit("test.echo", {"web": True}, delay=3600)
    yield handle
    handle.cancel()


def _open(client: TaskClient) -> int:
    return client.stats().watch_streams_open


# Item 4: a watch closed deterministically


def test_leaving_the_with_block_cancels_the_call(client: TaskClient, pending: TaskHandle) -> None:
    with client.watch(pending.id) as events:
        assert next(events).type == "state"
        assert _open(client) == 1
    # `events` is still referenced, so garbage collection cannot be what closed it.
    eventually(lambda: _open(client) == 0, what="the server's watcher slot freed")
    assert list(events) == []  # a closed stream yields nothing more
    assert events is not None


def test_breaking_out_of_the_with_block_cancels_the_call(
    client: TaskClient, pending: TaskHandle
) -> None:
    kept = []
    with pending.watch() as events:
        for event in events:
            kept.append(event)
            break
    eventually(lambda: _open(client) == 0, what="the server's watcher slot freed")
    assert [e.state for e in kept] == ["PENDING"]


def test_close_from_another_thread_ends_a_blocked_iteration(
    client: TaskClient, pending: TaskHandle
) -> None:
    events = client.watch(pending.id)
    seen: list[Event] = []
    ended = threading.Event()

    def read() -> None:
        seen.extend(events)  # blocks after the first event: the task stays PENDING
        ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    eventually(lambda: seen, what="the first event")
    events.close()
    assert ended.wait(20), "the blocked iteration did not end"
    reader.join()
    eventually(lambda: _open(client) == 0, what="the server's watcher slot freed")
    assert len(seen) == 1


async def test_async_with_block_and_cancelled_reader_cancel_the_call(
    grpc_addr: str, client: TaskClient, pending: TaskHandle
) -> None:
    async with AsyncTaskClient(grpc_addr) as aclient:
        async with aclient.watch(pending.id) as events:
            async for event in events:
                assert event.type == "state"
                break
        eventually(lambda: _open(client) == 0, what="the slot of the `async with` freed")
        assert [e async for e in events] == []

        first = asyncio.Event()

        async def read() -> None:
            async for _ in aclient.watch(pending.id):
                first.set()

        reader = asyncio.create_task(read())
        await first.wait()
        assert _open(client) == 1
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        eventually(lambda: _open(client) == 0, what="the slot of the cancelled reader freed")


def test_async_client_made_outside_a_loop_works_then_names_the_fix(
    grpc_addr: str, pending: TaskHandle
) -> None:
    aclient = AsyncTaskClient(grpc_addr)  # as a web app does at import time

    async def use() -> str:
        return (await aclient.get(pending.id)).state.value

    assert asyncio.run(use()) == "PENDING"
    with pytest.raises(WrongLoopError, match="make one client per loop"):
        asyncio.run(use())  # a second loop: refused at once, not a raw grpc RuntimeError


# Item 4: events that serialise, and typed errors in the resume path


def test_events_serialise_without_protobuf(client: TaskClient) -> None:
    handle = client.submit("test.chatty", {"n": 2})
    with handle.watch() as stream:
        events = list(stream)
    dicts = [e.to_dict() for e in events]
    assert json.loads(json.dumps(dicts)) == dicts  # JSON types only: no `raw`, no datetimes
    output = next(d for d in dicts if d["type"] == "output")
    assert set(output) == {"task_id", "sequence", "type", "time", "attempt", "text"}
    assert output["text"] == "chunk 0;"
    final = json.loads(events[-1].to_json())
    assert final["state"] == "SUCCEEDED" and final["result"] == 2
    assert "\n" not in events[-1].to_json()


def test_a_full_server_is_resource_exhausted_even_after_resuming(
    grpc_addr: str, client: TaskClient, pending: TaskHandle
) -> None:
    streams = [client.watch(pending.id) for _ in range(MAX_WATCHERS)]
    for s in streams:
        next(s)
    try:
        with (
            TaskClient(grpc_addr, reconnect_for=0.5) as impatient,
            pytest.raises(ResourceExhaustedError, match="gave up resuming"),
            impatient.watch(pending.id) as events,
        ):
            next(events)
    finally:
        for s in streams:
            s.close()


# Item 5: max_watchers exact under a burst, and the count in GetStats


async def _try_watch(stub: Any, task_id: str) -> grpc.StatusCode | Any:
    """Open a stream; its first event's call if admitted, else the refusal's code."""
    call = stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
    try:
        await call.read()
    except grpc.RpcError as exc:
        return exc.code()
    return call


async def test_max_watchers_holds_under_a_burst_of_opens(
    grpc_addr: str, client: TaskClient, pending: TaskHandle
) -> None:
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        got = await asyncio.gather(*(_try_watch(stub, pending.id) for _ in range(20)))
        admitted = [c for c in got if not isinstance(c, grpc.StatusCode)]
        refused = [c for c in got if isinstance(c, grpc.StatusCode)]
        assert len(admitted) == MAX_WATCHERS
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (20 - MAX_WATCHERS)
        assert _open(client) == MAX_WATCHERS
        for call in admitted:
            call.cancel()
    eventually(lambda: _open(client) == 0, what="every slot freed")
