"""Progress events and a task's latest progress say which attempt reported them."""

from __future__ import annotations

import pytest

from taskcast.client import TaskClient, TaskState

pytestmark = pytest.mark.usefixtures("worker")


def test_progress_carries_its_attempt_across_a_retry(client: TaskClient) -> None:
    handle = client.submit("test.flaky", {})
    events = list(handle.watch())
    progress = [(e.attempt, e.message) for e in events if e.type == "progress"]
    assert progress == [(1, "attempt 1"), (2, "attempt 2")]
    assert [e.raw.progress.attempt for e in events if e.raw and e.type == "progress"] == [1, 2]
    task = handle.get()
    assert task.state is TaskState.SUCCEEDED
    assert task.raw.progress.attempt == 2 and task.progress_message == "attempt 2"
