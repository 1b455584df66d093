"""A finished task is compacted after the replay window: its event stream becomes its terminal
event, kept in the hash; GetTask, ListTasks, watches and RetryTask all go on working."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskState
from taskcast.core.layout import Layout
from tests.support import WorkerProcess, eventually

WINDOW_S = 2


@pytest.fixture(scope="module")
def compacting_worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """A worker that compacts tasks finished more than WINDOW_S ago, checking 5 times a second."""
    env = {"TASKCAST_COMPACT_AFTER": str(WINDOW_S), "TASKCAST_PRUNE_INTERVAL": "0.2"}
    proc = WorkerProcess(redis_server.url, prefix, extra_env=env).start()
    yield proc
    proc.stop()


def compacted(rdb: redis.Redis, layout: Layout, task_id: str) -> bool:
    gone = not rdb.exists(layout.events(task_id))
    return gone and bool(rdb.hexists(layout.task(task_id), "tail"))


@pytest.mark.usefixtures("compacting_worker")
def test_a_finished_task_keeps_its_record_and_terminal_event(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    layout = Layout(prefix)
    handle = client.submit("test.chatty", {"n": 5}, labels={"compact": "yes"})
    assert handle.wait(timeout=20) == 5
    before = handle.get()
    with handle.watch() as events:
        history = list(events)
    assert [e.sequence for e in history] == list(range(1, before.last_sequence + 1))
    assert rdb.zscore(layout.finished(), handle.id) is not None  # waiting for its window

    eventually(lambda: compacted(rdb, layout, handle.id), 20, "the task compacted")
    assert rdb.zscore(layout.finished(), handle.id) is None
    assert handle.get() == before  # GetTask: nothing changed
    listed = client.list(state=TaskState.SUCCEEDED, labels={"compact": "yes"})
    assert [t.id for t in listed] == [handle.id]

    # A replay from the start: the marker, then the very terminal event it had before.
    with handle.watch() as events:
        replay = list(events)
    assert [e.type for e in replay] == ["events_trimmed", "state"]
    assert replay[0].first_available_sequence == before.last_sequence
    assert replay[1] == history[-1]
    with handle.watch(after_sequence=before.last_sequence) as events:
        assert list(events) == []  # a client that saw the end sees nothing more


@pytest.mark.usefixtures("compacting_worker")
def test_a_compacted_task_runs_again_with_its_sequence_going_on(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    layout = Layout(prefix)
    handle = client.submit("test.fatal", {})
    eventually(lambda: handle.get().state is TaskState.FAILED, 20, "failed")
    eventually(lambda: compacted(rdb, layout, handle.id), 20, "the task compacted")
    ended = handle.get().last_sequence

    handle.retry()
    eventually(lambda: handle.get().state is TaskState.FAILED, 20, "failed again")
    with handle.watch(after_sequence=ended) as events:
        again = list(events)
    assert [e.sequence for e in again] == list(range(ended + 1, ended + 1 + len(again)))
    assert again[0].state is TaskState.PENDING and again[-1].state is TaskState.FAILED
    # Finished again: back in line for compaction, then compacted to the new terminal event.
    eventually(lambda: compacted(rdb, layout, handle.id), 20, "compacted again")
    with handle.watch() as events:
        replay = list(events)
    assert [e.type for e in replay] == ["events_trimmed", "state"]
    assert replay[1] == again[-1]


@pytest.mark.usefixtures("compacting_worker")
def test_each_kind_of_end_replays_as_it_was(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    """The terminal event rebuilt from a compacted hash equals the one the stream held: a
    cancel's reason, a failure's error, a result; and an empty reason too."""
    layout = Layout(prefix)
    waiting = client.submit("test.echo", {}, delay=60)
    waiting.cancel("not needed any more")
    quiet = client.submit("test.echo", {}, delay=60)
    quiet.cancel()
    failed = client.submit("test.fatal", {})
    done = client.submit("test.echo", {"x": "y" * 200})  # a result longer than a short value
    eventually(lambda: failed.get().state is TaskState.FAILED, 20, "failed")
    done.wait(timeout=20)
    handles = (waiting, quiet, failed, done)
    ends = []
    for handle in handles:
        with handle.watch() as events:
            ends.append(list(events)[-1])
    for handle, end in zip(handles, ends, strict=True):
        eventually(functools.partial(compacted, rdb, layout, handle.id), 20, "compacted")
        with handle.watch() as events:
            assert list(events)[-1] == end
        assert rdb.hget(layout.task(handle.id), "tail") == str(end.sequence).encode()
