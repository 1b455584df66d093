"""WatchTasks: one stream of every event of every task carrying a label, resumed per task."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import (
    Event,
    FailedPreconditionError,
    InvalidArgumentError,
    TaskClient,
    TaskHandle,
    TaskSpec,
    TaskState,
)
from taskcast.core.layout import Layout
from taskcast.v1 import tasks_pb2 as pb
from tests.cli.test_commands import run
from tests.support import ServerProcess, eventually

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def server(redis_server: RedisProcess, prefix: str) -> Iterator[ServerProcess]:
    """A server of its own on a fixed port: it gets killed and comes back there."""
    proc = ServerProcess(redis_server.url, prefix, free_port()).start()
    yield proc
    proc.stop(signal.SIGKILL)


def submit_group(client: TaskClient, n: int, **payload: Any) -> tuple[str, list[str]]:
    """`n` demo.sleep tasks under a fresh label; the label and their ids."""
    batch = uuid.uuid4().hex[:12]
    specs = [
        TaskSpec("demo.sleep", {"seconds": 0.4, "steps": 3, **payload}, labels={"batch": batch})
        for _ in range(n)
    ]
    handles = client.submit_many(specs)
    assert all(isinstance(h, TaskHandle) for h in handles), handles
    return f"batch={batch}", [h.id for h in handles]  # type: ignore[union-attr]


def per_task(events: list[Event]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in events:
        if e.sequence:
            out.setdefault(e.task_id, []).append(e.sequence)
    return out


def assert_complete(client: TaskClient, events: list[Event], ids: list[str]) -> None:
    """Every event of every task exactly once, in order per task, each task ended."""
    seen = per_task(events)
    assert set(seen) == set(ids)
    for task_id in ids:
        task = client.get(task_id)
        assert task.state is TaskState.SUCCEEDED
        assert seen[task_id] == list(range(1, task.last_sequence + 1)), task_id


def test_one_stream_sees_every_event_across_a_server_kill_and_later_tasks(
    server: ServerProcess,
) -> None:
    with TaskClient(server.address, reconnect_for=30) as client:
        label, ids = submit_group(client, 20)
        events: list[Event] = []
        with client.watch_group(label, end_when_done=True) as stream:
            for event in stream:
                events.append(event)
                if len(events) == 5:  # the watch is open: this one joins the group later
                    [late] = client.submit_many(
                        [TaskSpec("demo.sleep", {"seconds": 0.4, "steps": 3},
                                  labels={"batch": label.split("=")[1]})]
                    )  # fmt: skip
                    assert isinstance(late, TaskHandle)
                    ids.append(late.id)
                if len(events) == 30:
                    server.stop(signal.SIGKILL)
                    server.start()  # back on the same address: the stream resumes there
        assert len(ids) == 21
        assert_complete(client, events, ids)


def test_cursors_resume_each_task_where_the_client_left_off(client: TaskClient) -> None:
    label, ids = submit_group(client, 5)
    first: list[Event] = []
    with client.watch_group(label) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 12:
                break
    cursors = {t: seqs[-1] for t, seqs in per_task(first).items()}
    with client.watch_group(label, cursors, end_when_done=True) as stream:
        rest = list(stream)
    assert_complete(client, first + rest, ids)
    # a cursor at each task's end: nothing left, the stream ends at once
    done = {t: client.get(t).last_sequence for t in ids}
    with client.watch_group(label, done, end_when_done=True) as stream:
        assert list(stream) == []


def test_a_group_watch_counts_once_against_the_watcher_limit(client: TaskClient) -> None:
    label, ids = submit_group(client, 3, seconds=30)  # running long enough to be watched
    with client.watch_group(label) as stream:
        next(stream)
        assert client.stats().watch_streams_open == 1
    eventually(lambda: client.stats().watch_streams_open == 0, 10, "the stream to close")
    for task_id in ids:
        client.cancel(task_id)


def test_bad_requests_are_refused(client: TaskClient, grpc_stub: Any) -> None:
    label, ids = submit_group(client, 1, seconds=0.01, steps=1)
    client.wait(ids[0], timeout=30)
    for bad, field in [("batch", "label"), ("Bad Key=1", "label['Bad Key']")]:
        with pytest.raises(InvalidArgumentError) as info:
            list(client.watch_group(bad))
        assert [f for f, _ in info.value.violations] == [field]
    with pytest.raises(InvalidArgumentError) as info:
        list(client.watch_group(label, {ids[0]: 999}))
    assert info.value.violations == [
        (
            f"cursors[{ids[0]}].after_sequence",
            f"is past the task's last event ({client.get(ids[0]).last_sequence})",
        )
    ]  # the field, as a negative one is named (was "cursors[<id>]")
    twice = [pb.TaskCursor(task_id=ids[0], after_sequence=1)] * 2
    with pytest.raises(grpc.RpcError) as raw:
        list(grpc_stub.WatchTasks(pb.WatchTasksRequest(label=label, cursors=twice), timeout=10))
    assert raw.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_group_over_10000_tasks_is_failed_precondition(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    layout = Layout(prefix)
    index = layout.index_label(layout.label_member("huge", "1"))
    rdb.zadd(index, {f"gone{i}": i for i in range(10_001)})
    try:
        with pytest.raises(FailedPreconditionError) as info:
            list(client.watch_group("huge=1"))
        assert "more than 10,000 tasks" in str(info.value)
    finally:
        rdb.delete(index)


def test_cli_watch_label_prints_one_json_object_per_event(
    client: TaskClient, grpc_addr: str
) -> None:
    label, ids = submit_group(client, 3)
    out = run("watch", "--label", label, "--until-done", "-o", "json", server=grpc_addr)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    seen: dict[str, list[int]] = {}
    for row in rows:
        seen.setdefault(row["task_id"], []).append(row["sequence"])
    assert {t: s for t, s in seen.items()} == {
        t: list(range(1, client.get(t).last_sequence + 1)) for t in ids
    }
    text = run("watch", "--label", label, "--until-done", server=grpc_addr)
    assert text.returncode == 0 and text.stdout.count("SUCCEEDED") == 3
    assert all(line.split()[0] in ids for line in text.stdout.splitlines())


def test_watch_stops_when_closed_from_another_thread(client: TaskClient) -> None:
    label, ids = submit_group(client, 1, seconds=30)
    stream = client.watch_group(label)
    first = next(stream)
    timer = threading.Timer(0.2, stream.close)
    timer.start()
    assert first.task_id == ids[0]
    assert [e for e in stream if e.sequence == 0] == []  # ends quietly, keep-alives not asked for
    client.cancel(ids[0])


def test_a_retried_task_goes_on_in_the_group_stream(client: TaskClient) -> None:
    batch = uuid.uuid4().hex[:12]
    [handle] = client.submit_many([TaskSpec("demo.fail", {"fatal": True}, labels={"b": batch})])
    assert isinstance(handle, TaskHandle)
    events: list[Event] = []
    with client.watch_group(f"b={batch}") as stream:
        for event in stream:
            events.append(event)
            if event.terminal and sum(e.terminal for e in events) == 1:
                client.retry(handle.id, "group-retry")  # a new series on the same id
            if sum(e.terminal for e in events) == 2:
                break
    assert per_task(events) == {handle.id: list(range(1, handle.get().last_sequence + 1))}
    states = [e.state for e in events if e.state is not None]
    assert states.count(TaskState.FAILED) == 2 and states.count(TaskState.PENDING) == 2
