"""Results and output events are bounded, whatever the kind, in a real worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskFailedError
from tests.support import WorkerProcess

MAX_RESULT, MAX_OUTPUT = 2048, 1024


@pytest.fixture(scope="module", autouse=True)
def small_worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """A worker with small bounds, so that tests stay small."""
    env = {
        "TASKCAST_MAX_RESULT_BYTES": str(MAX_RESULT),
        "TASKCAST_MAX_OUTPUT_BYTES": str(MAX_OUTPUT),
    }
    proc = WorkerProcess(redis_server.url, prefix, extra_env=env).start()
    yield proc
    proc.stop()


def test_a_result_over_the_limit_fails_at_once_naming_both_sizes(client: TaskClient) -> None:
    assert client.submit("test.echo", {"blob": "x" * 1000}).wait(timeout=30)["attempt"] == 1
    handle = client.submit("test.echo", {"blob": "x" * 3000})  # the kind allows 3 attempts
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=30)
    error = info.value.error
    assert error is not None and error.type == "NonRetryableError" and not error.retryable
    assert f"limit of {MAX_RESULT:,} (TASKCAST_MAX_RESULT_BYTES)" in error.message
    size = len(json.dumps({"payload": {"blob": "x" * 3000}, "attempt": 1}))  # what echo returns
    assert f"the result is {size:,} bytes of JSON" in error.message
    task = handle.get()
    assert task.attempt == 1 and task.result is None


def test_long_output_is_split_into_events_within_the_limit(client: TaskClient) -> None:
    handle = client.submit("test.chatty", {"n": 2, "size": 2500})
    assert handle.wait(timeout=30) == 2
    texts = [e.text for e in handle.watch() if e.type == "output"]
    assert all(len(t.encode()) <= MAX_OUTPUT for t in texts) and len(texts) == 6
    assert "".join(texts) == "".join(f"chunk {i};".ljust(2500, ".") for i in range(2))
