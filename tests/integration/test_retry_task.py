"""RetryTask: a FAILED or CANCELLED task runs again on the same id, its events continuing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import (
    AsyncTaskClient,
    Event,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    TaskClient,
    TaskState,
)
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from taskcast.v1 import tasks_pb2 as pb
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")
FULL, READ = "retry-full", "retry-read"
AUTH = [("authorization", f"Bearer {FULL}")]


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server requires tokens, so a read-only one can be refused."""
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        keepalive=0.3,
        auth_tokens=FULL,
        read_tokens=READ,
    )


@pytest.fixture(scope="module")
def client(grpc_addr: str) -> Iterator[TaskClient]:
    """The sync client, with the full-access token."""
    with TaskClient(grpc_addr, reconnect_for=20, token=FULL) as c:
        yield c


def states(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.state.value, e.attempt) for e in events if e.type == "state" and e.state]


def finished(client: TaskClient, task_id: str) -> TaskState:
    """Wait until the task is in a terminal state; that state."""

    def terminal() -> TaskState | None:
        state = client.get(task_id).state
        return state if state.terminal else None

    return eventually(terminal, what="a terminal state")


def failed_once(client: TaskClient) -> str:
    """A task that FAILED on attempt 1 and would succeed on attempt 2."""
    task_id = client.submit("demo.fail", {"times": 1}, max_attempts=1).id
    assert finished(client, task_id) is TaskState.FAILED
    return task_id


def test_failed_task_retried_succeeds_with_its_events_continuing(client: TaskClient) -> None:
    task_id = failed_once(client)
    old_last = client.get(task_id).last_sequence
    task = client.retry(task_id)
    assert task.id == task_id and task.state is TaskState.PENDING and task.error is None
    assert client.wait(task_id, timeout=20) == {"attempts": 2}
    events = list(client.watch(task_id))  # from the start: past the old FAILED, to the end
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(events) == [
        ("PENDING", 0),
        ("RUNNING", 1),
        ("FAILED", 1),
        ("PENDING", 1),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    assert events[3].message == "retry"
    resumed = list(client.watch(task_id, after_sequence=old_last))  # a watcher of the old stream
    assert [e.sequence for e in resumed] == list(range(old_last + 1, events[-1].sequence + 1))
    done = client.get(task_id)
    assert done.state is TaskState.SUCCEEDED and done.attempt == 2 and done.max_attempts == 2


def test_each_retry_gets_a_fresh_budget_of_attempts(client: TaskClient) -> None:
    handle = client.submit("demo.fail", {"times": 4}, max_attempts=2)
    assert finished(client, handle.id) is TaskState.FAILED
    handle.retry()
    assert finished(client, handle.id) is TaskState.FAILED
    task = handle.get()
    assert (task.attempt, task.max_attempts) == (4, 4)  # attempts 3 and 4: two, not zero
    handle.retry()
    assert handle.wait(timeout=20) == {"attempts": 5}
    assert states(list(handle.watch()))[-2:] == [("RUNNING", 5), ("SUCCEEDED", 5)]


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_wait_after_a_retry_waits_for_the_new_end(
    client: TaskClient, grpc_addr: str, twin: str
) -> None:
    """`wait` reads to the stream's end: the replay's earlier terminal event is not the end."""
    handle = client.submit("test.block", {"seconds": 1}, delay=60)
    handle.cancel()
    handle.retry()  # PENDING again at once; its attempt blocks for a second
    if twin == "sync":
        assert handle.wait(timeout=20) == "finished"
        return

    async def wait() -> Any:
        async with AsyncTaskClient(grpc_addr, token=FULL) as aio:
            return await aio.wait(handle.id, timeout=20)

    assert asyncio.run(wait()) == "finished"


def test_retry_keeps_the_task_until_it_ends_again(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    layout = Layout(prefix)
    task_id = client.submit("test.block", {"seconds": 30}, delay=60).id
    client.cancel(task_id)
    keys = (layout.task(task_id), layout.events(task_id))
    assert all(rdb.ttl(k) > 0 for k in keys)  # retention from the terminal state
    client.retry(task_id, "r-keep")
    assert [rdb.ttl(k) for k in keys] == [-1, -1]  # persisted while it runs again
    eventually(lambda: client.get(task_id).state is TaskState.RUNNING, what="running")
    client.cancel(task_id)
    assert finished(client, task_id) is TaskState.CANCELLED
    assert all(rdb.ttl(k) > 0 for k in keys)  # and given the retention again


def test_cancelled_task_retried_runs(client: TaskClient) -> None:
    task_id = client.submit("test.echo", {"n": 1}, delay=60).id
    assert client.cancel(task_id).state is TaskState.CANCELLED
    assert client.retry(task_id).state is TaskState.PENDING
    assert client.wait(task_id, timeout=20) == {"payload": {"n": 1}, "attempt": 1}
    assert states(list(client.watch(task_id))) == [
        ("PENDING", 0),
        ("CANCELLED", 0),
        ("PENDING", 0),
        ("RUNNING", 1),
        ("SUCCEEDED", 1),
    ]


def test_only_failed_or_cancelled_tasks_can_be_retried(client: TaskClient) -> None:
    done = client.submit("test.echo", {})
    client.wait(done.id, timeout=20)
    pending = client.submit("test.echo", {}, delay=60)
    running = client.submit("test.block", {"seconds": 30})
    eventually(lambda: running.get().state is TaskState.RUNNING, what="running")
    for handle, state in ((done, "SUCCEEDED"), (pending, "PENDING"), (running, "RUNNING")):
        with pytest.raises(FailedPreconditionError, match=state):
            handle.retry()
    running.cancel()
    pending.cancel()
    with pytest.raises(NotFoundError):
        client.retry("0" * 32)


def test_same_request_id_runs_once(client: TaskClient, grpc_stub: Any) -> None:
    stub = grpc_stub
    task_id = failed_once(client)
    request = pb.RetryTaskRequest(task_id=task_id, request_id="op-1")
    first = stub.RetryTask(request, metadata=AUTH, timeout=10)
    again = stub.RetryTask(request, metadata=AUTH, timeout=10)
    assert first.retried and not again.retried
    assert client.wait(task_id, timeout=20) == {"attempts": 2}
    after = stub.RetryTask(request, metadata=AUTH, timeout=10)  # even once it ended again
    assert not after.retried and after.task.state == pb.TASK_STATE_SUCCEEDED
    runs = [s for s in states(list(client.watch(task_id))) if s[0] == "RUNNING"]
    assert runs == [("RUNNING", 1), ("RUNNING", 2)]


def test_read_only_token_may_not_retry(client: TaskClient, grpc_addr: str) -> None:
    task_id = failed_once(client)
    with TaskClient(grpc_addr, token=READ) as reader, pytest.raises(PermissionDeniedError):
        reader.retry(task_id)
    assert client.get(task_id).state is TaskState.FAILED
