"""A RedriveTasks operation survives the loss of its worker and a restart of the server."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskState
from taskcast.core.layout import Layout
from tests.integration.test_redrive import failed_tasks, finished, retries
from tests.support import ServerProcess, WorkerGroup, eventually


@pytest.fixture
def server(redis_server: RedisProcess, prefix: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(redis_server.url, prefix, free_port()).start()
    yield proc
    proc.stop(signal.SIGKILL)


def cursor_at_least(rdb: redis.Redis, layout: Layout, op_id: str, n: int) -> None:
    """Wait until the operation stepped `n` ids."""

    def reached() -> bool:
        return int(rdb.hget(layout.redrive(op_id), "cursor") or 0) >= n

    eventually(reached, 30, f"operation {op_id} past {n} ids")


def test_a_worker_killed_mid_operation_leaves_the_rest_done_once(
    workers: WorkerGroup, client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    layout, batch = Layout(prefix), uuid.uuid4().hex
    first = workers.start()
    ids = failed_tasks(client, batch, 30)
    first.stop()
    runner = workers.start(queues=("taskcast",))  # runs the operation, none of its retries
    # Slow enough (10 s) that it is still running once the other worker has booted.
    started = client.redrive(labels={"batch": batch}, max_per_second=3)
    assert started.operation is not None
    op_id = started.operation.id
    cursor_at_least(rdb, layout, op_id, 3)
    workers.start(queues=("default",))  # runs the retries; it consumes "taskcast" too
    assert int(rdb.hget(layout.redrive(op_id), "cursor") or 0) < 30
    runner.stop(signal.SIGKILL)
    assert client.wait(op_id, timeout=60) == {"retried": 30, "skipped": 0, "total": 30}
    assert client.get(op_id).attempt >= 2  # the reaper gave it to the other worker
    finished(client, ids, TaskState.SUCCEEDED)
    assert [len(retries(rdb, layout, i)) for i in ids] == [1] * 30


def test_a_server_restart_mid_operation_changes_nothing(
    workers: WorkerGroup, server: ServerProcess, rdb: redis.Redis, prefix: str
) -> None:
    layout, batch = Layout(prefix), uuid.uuid4().hex
    workers.start()
    with TaskClient(server.address, reconnect_for=30) as client:
        ids = failed_tasks(client, batch, 20)
        started = client.redrive(labels={"batch": batch}, max_per_second=10)
        assert started.operation is not None
        op_id = started.operation.id
        cursor_at_least(rdb, layout, op_id, 3)
        server.stop(signal.SIGKILL)
        server.start()
        assert client.wait(op_id, timeout=60) == {"retried": 20, "skipped": 0, "total": 20}
        assert client.get(op_id).attempt == 1  # the operation never noticed
        finished(client, ids, TaskState.SUCCEEDED)
    assert [len(retries(rdb, layout, i)) for i in ids] == [1] * 20
