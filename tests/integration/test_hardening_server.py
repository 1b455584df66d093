"""Bounds an outside probe found missing (issue 12): watch cursors, list pages, health watchers,
connection limits, stream-open bursts, and the delayed figure of cancelled tasks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskcast.client import (
    AsyncTaskClient,
    InvalidArgumentError,
    RpcError,
    TaskClient,
    TaskState,
)
from taskcast.client._errors import from_grpc, retry_delay
from taskcast.core import mqlayout
from taskcast.core.layout import Layout
from taskcast.server.app import Running, create_server
from taskcast.server.config import ServerSettings
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc
from tests.support import LoopThread, eventually

pytestmark = pytest.mark.usefixtures("worker")
LOCAL = [("grpc.use_local_subchannel_pool", 1)]  # a connection of the test's own


@contextlib.contextmanager
def own_server(
    loop_thread: LoopThread, settings: ServerSettings, **changes: Any
) -> Iterator[Running]:
    """A second server on the module's Redis and prefix, with some settings changed."""
    running = loop_thread.run(create_server(settings.model_copy(update=changes)))
    try:
        yield running
    finally:
        loop_thread.run(running.stop(0.2))


def _code(fn: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


# Item 2: a cursor past the last stored event


def test_watch_cursor_past_the_last_event_is_refused(client: TaskClient) -> None:
    handle = client.submit("demo.sleep", {"seconds": 1, "steps": 2})
    eventually(lambda: handle.get().state is TaskState.RUNNING, what="running")
    with pytest.raises(InvalidArgumentError) as info:
        list(client.watch(handle.id, after_sequence=2**62, timeout=20))
    assert [f for f, _ in info.value.violations] == ["after_sequence"]
    assert handle.wait(timeout=20) == {"slept": 1.0, "steps": 2}


def test_watch_from_the_last_sequence_ends_with_the_task(client: TaskClient) -> None:
    handle = client.submit("demo.sleep", {"seconds": 0.6, "steps": 2})
    eventually(lambda: handle.get().state is TaskState.RUNNING, what="running")
    last = handle.get().last_sequence
    events = list(client.watch(handle.id, after_sequence=last, timeout=20))
    assert [e.sequence for e in events] == list(range(last + 1, events[-1].sequence + 1))
    assert events[-1].state is TaskState.SUCCEEDED
    # The end already seen: the stream ends at once, with nothing.
    assert list(client.watch(handle.id, after_sequence=events[-1].sequence, timeout=20)) == []


# Item 10: list pages bounded by bytes, payloads only when asked


def test_list_pages_are_bounded_by_bytes_and_miss_nothing(
    grpc_stub: Any, client: TaskClient, server_settings: ServerSettings
) -> None:
    labels = {"suite": "list-bytes"}
    big = {"pad": "x" * 300_000}
    huge = {"pad": "y" * 1_040_000}  # larger than a page on its own
    ids = {client.submit("test.echo", big, labels=labels, delay=3600).id for _ in range(11)}
    ids.add(client.submit("test.echo", huge, labels=labels, delay=3600).id)

    plain = grpc_stub.ListTasks(pb.ListTasksRequest(labels=labels, page_size=100), timeout=10)
    assert {t.id for t in plain.tasks} == ids and not plain.next_page_token
    assert all(t.payload_json == "" for t in plain.tasks)
    assert plain.ByteSize() < 20_000

    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = grpc_stub.ListTasks(
            pb.ListTasksRequest(
                labels=labels, page_size=100, page_token=token, include_payloads=True
            ),
            timeout=10,
        )
        pages += 1
        assert page.ByteSize() <= server_settings.list_max_bytes or len(page.tasks) == 1
        assert all(len(t.payload_json) > 300_000 for t in page.tasks)
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and pages >= 5
    full = list(client.list(labels=labels, include_payloads=True, page_size=5))
    assert sorted(t.id for t in full) == sorted(ids)
    assert {len(t.payload["pad"]) for t in full} == {300_000, 1_040_000}
    for task_id in ids:
        client.cancel(task_id)


# Item 14: health Watch streams are bounded


def test_health_watch_streams_are_bounded(
    loop_thread: LoopThread, server_settings: ServerSettings
) -> None:
    with (
        own_server(loop_thread, server_settings, max_health_watchers=3) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}", LOCAL) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        streams = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(3)]
        for s in streams:
            assert next(s).status == health_pb2.HealthCheckResponse.SERVING
        refused = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            next(refused)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay(from_grpc(info.value)) == 5.0
        streams[0].cancel()
        eventually(lambda: running.health.watching == 2, what="a slot freed")
        again = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(again).status == health_pb2.HealthCheckResponse.SERVING
        for s in (*streams[1:], again):
            s.cancel()


# Item 15: per-connection limits


def test_idle_connection_is_closed_after_the_idle_setting(
    loop_thread: LoopThread, server_settings: ServerSettings
) -> None:
    with own_server(loop_thread, server_settings, connection_idle=0.5) as running:
        states: list[grpc.ChannelConnectivity] = []
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", LOCAL) as channel:
            channel.subscribe(states.append, try_to_connect=False)
            pb_grpc.TaskServiceStub(channel).GetStats(pb.GetStatsRequest(), timeout=10)
            # The server's GOAWAY after 0.5 s without calls takes the channel back to IDLE.
            eventually(
                lambda: (
                    grpc.ChannelConnectivity.IDLE
                    in states[states.index(grpc.ChannelConnectivity.READY) :]
                ),
                what="the idle connection closed",
            )
            channel.unsubscribe(states.append)


def test_streams_past_the_per_connection_cap_are_refused(
    loop_thread: LoopThread, server_settings: ServerSettings, client: TaskClient
) -> None:
    handle = client.submit("test.block", {"seconds": 30})
    with (
        own_server(loop_thread, server_settings, max_streams_per_connection=1) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}", LOCAL) as channel,
    ):
        stub = pb_grpc.TaskServiceStub(channel)
        watch = stub.WatchTask(pb.WatchTaskRequest(task_id=handle.id), timeout=30)
        assert next(watch).sequence == 1  # the stream is open on the server
        code = _code(lambda: stub.GetTask(pb.GetTaskRequest(task_id=handle.id), timeout=2))
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        watch.cancel()
        assert stub.GetTask(pb.GetTaskRequest(task_id=handle.id), timeout=10).task.id
    client.cancel(handle.id)


# Item 16: bursts of stream opens


async def _watch_all(address: str, handles: list[Any], per_task: int) -> list[list[int]]:
    async with AsyncTaskClient(address, reconnect_for=60) as c:

        async def one(task_id: str) -> list[int]:
            return [e.sequence async for e in c.watch(task_id)]

        return await asyncio.wait_for(
            asyncio.gather(*(one(h.id) for h in handles for _ in range(per_task))), 120
        )


def test_burst_of_watch_opens_is_not_cancelled_by_default(grpc_addr: str) -> None:
    """grpc-core's default pending-call limits answered ~23% of 3,000 opens CANCELLED."""

    async def burst() -> list[grpc.StatusCode]:
        async with AsyncTaskClient(grpc_addr) as c:
            handle = await c.submit("demo.sleep", {"seconds": 0.5, "steps": 1})
        async with grpc.aio.insecure_channel(grpc_addr, options=LOCAL) as channel:
            stub = pb_grpc.TaskServiceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    async for _ in stub.WatchTask(
                        pb.WatchTaskRequest(task_id=handle.id), timeout=60
                    ):
                        pass
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(one() for _ in range(2000)))

    codes = asyncio.run(burst())
    assert set(codes) == {grpc.StatusCode.OK}


def test_watches_rejected_in_a_burst_resume_and_miss_nothing(
    loop_thread: LoopThread, server_settings: ServerSettings, client: TaskClient
) -> None:
    handles = [client.submit("demo.sleep", {"seconds": 1, "steps": 3}) for _ in range(4)]
    with own_server(loop_thread, server_settings, max_pending_calls=5, max_watchers=50) as running:
        streams = asyncio.run(_watch_all(f"127.0.0.1:{running.port}", handles, 100))
    for events in streams:
        assert events == list(range(1, len(events) + 1)) and len(events) == 6


def test_a_closed_client_does_not_resume_its_watch(grpc_addr: str, client: TaskClient) -> None:
    handle = client.submit("test.block", {"seconds": 30})
    own = TaskClient(grpc_addr, reconnect_for=30)
    got: list[Any] = []
    failure: list[BaseException] = []

    def follow() -> None:
        try:
            got.extend(own.watch(handle.id))
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    eventually(lambda: got, what="the first event")
    own.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(failure[0], RpcError) and failure[0].code == grpc.StatusCode.CANCELLED
    client.cancel(handle.id)


# Item 19: a cancelled delayed task leaves the delayed figure


def test_cancelled_delayed_task_leaves_the_delayed_count(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    def delayed() -> int:
        return next(q.delayed for q in client.stats().queues if q.name == "default")

    before = delayed()
    handle = client.submit("test.echo", {"later": True}, delay=3600)
    assert delayed() == before + 1
    client.cancel(handle.id)
    assert delayed() == before
    layout = Layout(prefix)
    rid = rdb.hget(layout.task(handle.id), "rid")
    assert rid is not None
    assert rid not in rdb.lrange(layout.mq.queue(mqlayout.delayed("default")), 0, -1)
    assert handle.get().state is TaskState.CANCELLED


def test_reconnect_never_comes_back_sooner_than_the_retry_hint() -> None:
    from taskcast.client._requests import Reconnect

    policy = Reconnect(budget=60)
    delays = [policy.next_delay(1.5) for _ in range(8)]
    assert all(d is not None and 1.5 <= d <= 2.0 for d in delays)  # 2 s: the backoff cap
    assert all(d is not None and d <= 2.0 for d in (policy.next_delay() for _ in range(8)))
