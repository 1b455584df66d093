"""Nothing lost when workers die: kill -9 mid-task, a poison task, a graceful stop."""

from __future__ import annotations

import os
import signal

import pytest

from taskcast.client import TaskClient, TaskFailedError, TaskState
from tests.support import WorkerGroup, eventually


def test_worker_killed_mid_task_runs_again_elsewhere(
    client: TaskClient, workers: WorkerGroup
) -> None:
    first = workers.start(extra_env={"TASKCAST_LEASE": "2"})
    handle = client.submit("demo.sleep", {"seconds": 1.5, "steps": 3}, max_attempts=3)
    watch = handle.watch()
    events = [next(watch), next(watch)]
    assert events[-1].state is TaskState.RUNNING
    # Killed before the other machine boots: a boot (~2 s on a loaded box) outlasted the 1.5 s
    # task, which then finished on the first worker and the test failed.
    first.stop(signal.SIGKILL)  # the whole group, supervisor included: nothing restarts here
    workers.start()  # the other machine
    events += list(watch)
    states = [(e.state.value, e.attempt) for e in events if e.type == "state" and e.state]
    assert states == [
        ("PENDING", 0),
        ("RUNNING", 1),
        ("RETRYING", 1),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    lost = next(e for e in events if e.state is TaskState.RETRYING)
    assert lost.error is not None and lost.error.type == "WorkerLost"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_poison_task_fails_after_its_attempts_instead_of_looping(
    client: TaskClient, workers: WorkerGroup
) -> None:
    # One worker whose supervisor restarts it after each crash, as in production.
    worker = workers.start()
    handle = client.submit("test.crash", {}, max_attempts=2)
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=60)
    assert info.value.error is not None and info.value.error.type == "WorkerLost"
    assert "all 2 attempts used" in info.value.error.message
    assert worker.proc is not None and worker.proc.poll() is None  # the supervisor lives on


def test_crash_on_first_attempt_then_success(client: TaskClient, workers: WorkerGroup) -> None:
    workers.start()
    handle = client.submit("test.crash", {"times": 1}, max_attempts=2)
    assert handle.wait(timeout=60) == "survived attempt 2"


def test_sigterm_lets_running_tasks_finish_and_leaves_queued_ones(
    client: TaskClient, workers: WorkerGroup
) -> None:
    worker = workers.start(threads=1, shutdown_timeout=20)
    # Long enough that the SIGTERM below lands while it runs, even on a loaded machine (at 1 s,
    # a late signal let the freed thread take the queued tasks).
    running = client.submit("demo.sleep", {"seconds": 4, "steps": 2})
    watch = running.watch()
    assert [next(watch).state, next(watch).state] == [TaskState.PENDING, TaskState.RUNNING]
    queued = [client.submit("test.echo", {"i": i}) for i in range(3)]
    worker.stop(signal.SIGTERM)
    assert worker.proc is not None and worker.proc.returncode == 0
    assert running.get().state is TaskState.SUCCEEDED  # finished before the worker exited
    for h in queued:
        task = h.get()
        assert (task.state, task.attempt) == (TaskState.PENDING, 0)
    workers.start()
    for h in queued:
        assert h.wait(timeout=30)["attempt"] == 1


def test_worker_process_oom_kill_is_recovered_by_its_supervisor(
    client: TaskClient, workers: WorkerGroup
) -> None:
    worker = workers.start()
    handle = client.submit("demo.sleep", {"seconds": 1, "steps": 2}, max_attempts=2)
    watch = handle.watch()
    assert [next(watch).state, next(watch).state] == [TaskState.PENDING, TaskState.RUNNING]
    os.kill(worker.pids()[0], signal.SIGKILL)  # only the worker process, as the OOM killer would
    assert handle.wait(timeout=60) == {"slept": 1.0, "steps": 2}
    assert handle.get().attempt == 2
    eventually(lambda: worker.pids(), what="worker restarted")
