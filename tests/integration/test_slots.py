"""Async attempts on slots: hundreds at once per process, and every promise kept at that scale."""

from __future__ import annotations

import signal

from taskcast.client import Event, QueueStats, TaskClient, TaskHandle, TaskState
from tests.support import WorkerGroup, eventually


def running(client: TaskClient) -> int:
    return sum(q.running for q in client.stats().queues)


def finished(handles: list[TaskHandle]) -> dict[str, list[Event]]:
    """Every task's whole history, once each has ended."""
    return {h.id: list(h.watch(timeout=60)) for h in handles}


def terminal(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "state" and e.state and e.state.terminal]


def test_hundreds_of_async_attempts_run_at_once_on_two_threads(
    client: TaskClient, workers: WorkerGroup
) -> None:
    workers.start(threads=2, extra_env={"TASKCAST_REGISTER_INTERVAL": "0.2"})
    n = 200
    handles = [client.submit("test.async_block", {"seconds": 120}) for _ in range(n)]
    eventually(lambda: running(client) == n, 60, f"{n} attempts running at once")

    def capacity() -> QueueStats | None:  # as the worker last recorded it (every 0.2 s here)
        q = next(q for q in client.stats().queues if q.name == "default")
        return q if q.slots_used == n else None

    q = eventually(capacity, 20, "the worker's slots in use shown by GetStats")
    assert (q.workers, q.slots, q.threads, q.threads_busy) == (1, 1000, 2, 0)
    for h in handles:
        h.cancel()
    for task_id, events in finished(handles).items():
        ends = terminal(events)
        assert [e.state for e in ends] == [TaskState.CANCELLED], task_id
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_every_attempt_writes_only_its_own_events(client: TaskClient, workers: WorkerGroup) -> None:
    workers.start(threads=2)
    handles = [client.submit("test.async_sleep", {"seconds": 0.3}) for _ in range(300)]
    for task_id, events in finished(handles).items():
        mark = f"{task_id}#1"
        assert [e.text for e in events if e.type == "output"] == [mark, mark]
        assert [e.message for e in events if e.type == "progress"] == [mark]
        assert [e.state for e in terminal(events)] == [TaskState.SUCCEEDED]
        assert events[-1].result == {"task": task_id, "attempt": 1}
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_a_full_process_leaves_work_to_a_process_with_free_slots(
    client: TaskClient, workers: WorkerGroup
) -> None:
    workers.start(extra_env={"TASKCAST_SLOTS": "5"})
    handles = [client.submit("test.async_block", {"seconds": 120}) for _ in range(12)]
    eventually(lambda: running(client) == 5, 30, "the first process's 5 slots in use")
    pending = [h for h in handles if h.get().state is TaskState.PENDING]
    assert len(pending) == 7  # queued, not hoarded: nothing fetched beyond the free slots
    workers.start(extra_env={"TASKCAST_SLOTS": "5"})
    eventually(lambda: running(client) == 10, 30, "the second process takes 5 more")
    for h in handles:
        h.cancel()
    states = [terminal(events)[0].state for events in finished(handles).values()]
    assert states == [TaskState.CANCELLED] * 12


def test_time_limit_ends_many_async_attempts(client: TaskClient, workers: WorkerGroup) -> None:
    workers.start(threads=2)
    handles = [client.submit("test.async_block", {"seconds": 120}, timeout=0.5) for _ in range(50)]
    for events in finished(handles).values():
        (end,) = terminal(events)
        assert end.state is TaskState.FAILED
        assert end.error is not None and end.error.type == "TimeLimitExceeded"


def test_sigterm_finishes_what_fits_and_hands_back_the_rest(
    client: TaskClient, workers: WorkerGroup
) -> None:
    first = workers.start(threads=2, shutdown_timeout=3)
    short = [client.submit("test.async_sleep", {"seconds": 1}) for _ in range(40)]
    long = [client.submit("test.async_sleep", {"first": 120, "seconds": 0.1}) for _ in range(20)]
    eventually(lambda: running(client) == 60, 30, "all 60 running")
    first.stop(signal.SIGTERM)
    assert first.proc is not None and first.proc.returncode == 0
    for h in short:  # finished within the shutdown timeout, on the first attempt
        assert h.get().state is TaskState.SUCCEEDED and h.get().attempt == 1
    for h in long:  # handed back at the deadline: waiting for another worker
        assert h.get().state is TaskState.RETRYING
    workers.start(threads=2)
    for events in finished(long).values():
        states = [(e.state, e.attempt) for e in events if e.type == "state"]
        assert states == [
            (TaskState.PENDING, 0),
            (TaskState.RUNNING, 1),
            (TaskState.RETRYING, 1),
            (TaskState.RUNNING, 2),
            (TaskState.SUCCEEDED, 2),
        ]
        handed_back = events[[e.state for e in events].index(TaskState.RETRYING)]
        assert handed_back.error is not None and handed_back.error.type == "WorkerShutdown"


def test_kill_9_gets_every_async_attempt_reaped_and_run_again(
    client: TaskClient, workers: WorkerGroup
) -> None:
    first = workers.start(threads=2)
    handles = [client.submit("test.async_sleep", {"first": 120, "seconds": 0.1}) for _ in range(50)]
    eventually(lambda: running(client) == 50, 30, "all 50 running")
    first.stop(signal.SIGKILL)
    workers.start(threads=2)
    for task_id, events in finished(handles).items():
        (end,) = terminal(events)
        assert end.state is TaskState.SUCCEEDED and end.result == {"task": task_id, "attempt": 2}
        lost = [e for e in events if e.state is TaskState.RETRYING]
        assert len(lost) == 1 and lost[0].error is not None
        assert lost[0].error.type == "WorkerLost"
