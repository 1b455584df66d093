"""Idle consumers wait on wake-ups, not on their poll: a burst reaches every idle process."""

from __future__ import annotations

from taskcast.client import TaskClient, TaskHandle, TaskSpec, TaskState
from tests.support import WorkerGroup, eventually


def test_a_burst_reaches_every_idle_worker_process_without_its_poll(
    client: TaskClient, workers: WorkerGroup
) -> None:
    """Two idle processes polling once a minute: one submit's token wakes one of them, whose
    fetch (prefetch 2: one thread) leaves tasks behind and wakes the other, so both run tasks
    at once long before either polls again."""
    minute = {"TASKCAST_POLL_INTERVAL_MS": "60000"}
    for _ in range(2):
        workers.start(threads=1, extra_env=minute)
    handles = [
        h
        for h in client.submit_many([TaskSpec("test.block", {"seconds": 30}) for _ in range(6)])
        if isinstance(h, TaskHandle)
    ]
    assert len(handles) == 6
    try:
        eventually(
            lambda: sum(h.get().state is TaskState.RUNNING for h in handles) == 2,
            20,
            "a task running on each process",
        )
    finally:
        for h in handles:
            h.cancel()

    def all_cancelled() -> bool:
        return all(h.get().state is TaskState.CANCELLED for h in handles)

    eventually(all_cancelled, 20, "every task cancelled")
