"""A task's whole life through the real server, a real worker process and Redis."""

from __future__ import annotations

from typing import Any

import pytest

from taskcast.client import (
    Event,
    FailedPreconditionError,
    TaskCancelledError,
    TaskClient,
    TaskFailedError,
    TaskState,
)
from taskcast.core.layout import Layout
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")


def states(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.state.value, e.attempt) for e in events if e.type == "state" and e.state]


def assert_gapless(events: list[Event]) -> None:
    seqs = [e.sequence for e in events if e.sequence]
    assert seqs == list(range(1, len(seqs) + 1))


def test_success_with_progress_streams_every_event_in_order(client: TaskClient) -> None:
    handle = client.submit("demo.sleep", {"seconds": 0.2, "steps": 4})
    assert handle.task is not None and handle.task.state is TaskState.PENDING
    events = list(handle.watch())
    assert_gapless(events)
    assert [e.type for e in events] == ["state", "state", *["progress"] * 4, "state"]
    assert [e.progress for e in events if e.type == "progress"] == [0.25, 0.5, 0.75, 1.0]
    assert states(events) == [("PENDING", 0), ("RUNNING", 1), ("SUCCEEDED", 1)]
    assert events[-1].result == {"slept": 0.2, "steps": 4}
    task = handle.get()
    assert task.state is TaskState.SUCCEEDED and task.progress == 1.0
    assert task.last_sequence == len(events) and task.finished_at is not None


def test_retry_then_success(client: TaskClient) -> None:
    handle = client.submit("demo.fail", {"times": 1})
    assert handle.wait(timeout=20) == {"attempts": 2}
    events = list(handle.watch())
    assert states(events) == [
        ("PENDING", 0),
        ("RUNNING", 1),
        ("RETRYING", 1),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    retry = events[2]
    assert retry.error is not None and retry.error.retryable
    assert "attempt 1" in retry.error.message and retry.next_attempt_at is not None


def test_retries_exhausted_fails_with_the_last_error(client: TaskClient) -> None:
    handle = client.submit("demo.fail", {"message": "boom"}, max_attempts=2)
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=20)
    assert info.value.error is not None
    assert (
        info.value.error.type == "RuntimeError" and "boom (attempt 2)" in info.value.error.message
    )
    assert states(list(handle.watch()))[-1] == ("FAILED", 2)


def test_non_retryable_error_fails_at_once(client: TaskClient) -> None:
    handle = client.submit("test.fatal", {})
    with pytest.raises(TaskFailedError, match="this cannot work"):
        handle.wait(timeout=20)
    assert handle.get().attempt == 1


def test_time_limit_fails_without_retry(client: TaskClient) -> None:
    handle = client.submit("test.hog", {"seconds": 30}, timeout=0.5)
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=20)
    assert info.value.error is not None and info.value.error.type == "TimeLimitExceeded"
    assert info.value.task.attempt == 1


def test_unserialisable_result_is_a_clear_final_error(client: TaskClient) -> None:
    with pytest.raises(TaskFailedError, match="not JSON-serialisable"):
        client.submit("test.bad_result", {}).wait(timeout=20)


def test_async_handler_result(client: TaskClient) -> None:
    payload = {"big": 2**70 + 1, "nested": {"list": [1, "two", None, 3.5]}}
    assert client.submit("test.async_echo", payload).wait(timeout=20) == payload


def test_payload_round_trips_exactly(client: TaskClient) -> None:
    text = '{"n": 123456789012345678901234567890, "f": 1.10, "s": "\\u00e9t\\u00e9"}'
    handle = client.submit("test.echo", text)
    assert handle.get().raw.payload_json == text
    assert handle.wait(timeout=20)["payload"]["n"] == 123456789012345678901234567890


def test_cancel_pending_is_immediate_and_never_runs(client: TaskClient) -> None:
    handle = client.submit("test.echo", {}, delay=30)
    task = handle.cancel("changed my mind")
    assert task.state is TaskState.CANCELLED
    events = list(handle.watch())
    assert states(events) == [("PENDING", 0), ("CANCELLED", 0)]
    assert events[-1].message == "changed my mind"
    with pytest.raises(TaskCancelledError):
        handle.wait(timeout=5)


def test_cancel_running_sync_handler_ends_cancelled(client: TaskClient) -> None:
    handle = client.submit("test.block", {"seconds": 30})
    watch = handle.watch()
    assert next(e for e in watch if e.type == "progress").message == "blocking"
    task = handle.cancel()
    assert task.cancel_requested and task.state is TaskState.RUNNING
    rest = list(watch)
    assert rest[-1].state is TaskState.CANCELLED


def test_cancel_running_async_handler_ends_cancelled(client: TaskClient) -> None:
    handle = client.submit("test.async_block", {"seconds": 30})
    assert next(e for e in handle.watch() if e.type == "output").text == "started"
    handle.cancel()
    with pytest.raises(TaskCancelledError):
        handle.wait(timeout=10)


def test_cancel_finished_is_failed_precondition(client: TaskClient) -> None:
    handle = client.submit("test.echo", {})
    handle.wait(timeout=20)
    with pytest.raises(FailedPreconditionError, match="already finished"):
        handle.cancel()


def test_watch_of_finished_task_replays_everything(client: TaskClient) -> None:
    handle = client.submit("test.chatty", {"n": 5})
    handle.wait(timeout=20)
    first, again = list(handle.watch()), list(handle.watch())
    assert [e.raw for e in first] == [e.raw for e in again]
    assert_gapless(first)
    assert "".join(e.text for e in first if e.type == "output") == "".join(
        f"chunk {i};" for i in range(5)
    )


def test_watch_cut_midstream_resumes_without_gap_or_duplicate(client: TaskClient) -> None:
    handle = client.submit("test.chatty", {"n": 20})
    seen: list[Event] = []
    for event in handle.watch():
        seen.append(event)
        if len(seen) == 7:
            break  # drops the stream mid-way, as a lost connection would
    seen += list(handle.watch(after_sequence=seen[-1].sequence))
    assert_gapless(seen)
    assert seen[-1].state is TaskState.SUCCEEDED
    assert len(seen) == handle.get().last_sequence


def test_watch_after_the_end_returns_at_once(client: TaskClient) -> None:
    handle = client.submit("test.echo", {})
    handle.wait(timeout=20)
    assert list(handle.watch(after_sequence=handle.get().last_sequence)) == []


def test_idle_stream_gets_keep_alives(client: TaskClient) -> None:
    handle = client.submit("test.echo", {}, delay=30)
    kinds: list[str] = []
    for event in handle.watch(keep_alives=True):
        kinds.append(event.type)
        if event.type == "keep_alive":
            break
    assert kinds == ["state", "keep_alive"]
    handle.cancel()


def test_list_filters_and_pages(client: TaskClient) -> None:
    tag = {"batch": "lst"}
    ids = [client.submit("test.echo", {"i": i}, labels=tag).id for i in range(5)]
    listed = [t.id for t in client.list(labels=tag, page_size=2)]
    assert listed == ids[::-1]
    assert [t.id for t in client.list(labels=tag, limit=3)] == ids[::-1][:3]
    for i in ids:
        client.handle(i).wait(timeout=20)
    done = {t.id for t in client.list(state="SUCCEEDED", kind="test.echo", limit=500)}
    assert set(ids) <= done
    assert not {t.id for t in client.list(state="FAILED", labels=tag)}


def test_stats_count_by_kind_and_queue(client: TaskClient) -> None:
    def counts() -> dict[TaskState, int]:
        kinds = {k.kind: k for k in client.stats().kinds}
        return kinds["test.echo"].counts if "test.echo" in kinds else {}

    before = counts().get(TaskState.SUCCEEDED, 0)
    client.submit("test.echo", {}).wait(timeout=20)
    stats = client.stats()
    echo = next(k for k in stats.kinds if k.kind == "test.echo")
    assert echo.counts[TaskState.SUCCEEDED] == before + 1
    assert echo.run_time_samples >= 1 and echo.run_time_p50 is not None
    assert "default" in {q.name for q in stats.queues}
    eventually(
        lambda: next(q for q in client.stats().queues if q.name == "default").depth == 0 or None,
        what="queue drained",
    )


def test_list_pages_through_tasks_created_in_the_same_millisecond(
    client: TaskClient, rdb: Any, prefix: str
) -> None:
    tag = {"batch": "same-ms"}
    ids = {client.submit("test.echo", {"i": i}, labels=tag, delay=60).id for i in range(7)}
    index = Layout(prefix).index_label(Layout.label_member("batch", "same-ms"))
    rdb.zadd(index, dict.fromkeys(ids, 1_000_000))  # one creation time for all: only ids differ
    paged = [t.id for t in client.list(labels=tag, page_size=1)]
    assert sorted(paged) == sorted(ids)
    assert paged == sorted(ids, reverse=True)
    for task_id in ids:
        client.cancel(task_id)
