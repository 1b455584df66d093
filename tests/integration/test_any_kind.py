"""TASKCAST_ACCEPT_ANY_KIND: the server takes kinds before any worker registered them."""

from __future__ import annotations

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskState
from taskcast.server.config import ServerSettings
from tests.support import WorkerProcess


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server accepts any kind."""
    return ServerSettings(
        redis_url=redis_server.url, redis_prefix=prefix, listen="127.0.0.1:0", accept_any_kind=True
    )


def test_task_submitted_before_any_worker_runs_once_one_starts(
    client: TaskClient, redis_server: RedisProcess, prefix: str
) -> None:
    handle = client.submit("test.echo", {"early": True})  # no worker has registered anything
    task = handle.get()
    assert (task.state, task.queue, task.max_attempts) == (TaskState.PENDING, "default", 3)
    worker = WorkerProcess(redis_server.url, prefix).start()
    try:
        assert handle.wait(timeout=30)["payload"] == {"early": True}
    finally:
        worker.stop()
