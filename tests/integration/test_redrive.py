"""RedriveTasks against a real server and worker: select, dry-run, pace, cancel, idempotency."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

import grpc
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskcast.client import (
    AlreadyExistsError,
    AsyncTaskClient,
    InvalidArgumentError,
    TaskClient,
    TaskState,
)
from taskcast.core.layout import Layout
from taskcast.v1 import tasks_pb2 as pb
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")


def finished(client: TaskClient, ids: list[str], state: TaskState = TaskState.FAILED) -> None:
    """Wait until every task is in `state`."""
    eventually(
        lambda: all(client.get(i).state is state for i in ids), 30, f"{len(ids)} tasks {state}"
    )


def failed_tasks(client: TaskClient, batch: str, n: int, **payload: Any) -> list[str]:
    """`n` demo.fail tasks labelled batch=`batch` that FAILED on attempt 1 (RuntimeError) and
    succeed on attempt 2; with fatal=True, they fail with NonRetryableError instead."""
    body = {"times": 1, **payload}
    ids = [
        client.submit("demo.fail", body, max_attempts=1, labels={"batch": batch}).id
        for _ in range(n)
    ]
    finished(client, ids)
    return ids


def oldest_first(client: TaskClient, ids: list[str]) -> list[str]:
    """`ids` in index order: by creation time (ms), then by id for tasks of the same ms."""
    return sorted(ids, key=lambda i: (client.get(i).created_at, i))


def retries(rdb: redis.Redis, layout: Layout, task_id: str) -> list[int]:
    """Redis times (ms) of the task's "retry" events."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", rdb.xrange(layout.events(task_id)))
    return [int(f[b"ts"]) for _, f in entries if f.get(b"reason") == b"retry"]


def most_in_one_second(times: list[int]) -> int:
    """The most events in any window [t, t + 1000 ms)."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + 1000) for t in times), default=0)


def test_dry_run_counts_and_samples_and_changes_nothing(client: TaskClient) -> None:
    batch = uuid.uuid4().hex
    runtime = failed_tasks(client, batch, 4)
    fatal = failed_tasks(client, batch, 2, fatal=True)
    labels = {"batch": batch}
    every = client.redrive(labels=labels, dry_run=True)
    assert (every.count, every.truncated, every.operation) == (6, False, None)
    assert every.sample_task_ids == oldest_first(client, runtime) + oldest_first(client, fatal)
    some = client.redrive(labels=labels, error_type="RuntimeError", dry_run=True, sample_size=2)
    assert some.count == 4 and some.sample_task_ids == oldest_first(client, runtime)[:2]
    assert client.redrive(labels=labels, states=["CANCELLED"], dry_run=True).count == 0
    assert client.redrive(labels=labels, kind="demo.sleep", dry_run=True).count == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert client.redrive(labels=labels, finished_after=later, dry_run=True).count == 0
    assert client.redrive(labels=labels, finished_before=later, dry_run=True).count == 6
    assert all(client.get(i).state is TaskState.FAILED for i in runtime + fatal)
    assert not list(client.list(kind="taskcast.redrive", labels=labels))


def test_redrive_retries_exactly_the_filtered_tasks_once(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    batch = uuid.uuid4().hex
    runtime = failed_tasks(client, batch, 5)
    fatal = failed_tasks(client, batch, 2, fatal=True)
    key = f"redrive-{batch}"
    started = client.redrive(
        labels={"batch": batch}, error_type="RuntimeError", max_per_second=1000, request_id=key
    )
    assert started.count == 5 and started.created and started.operation is not None
    op = started.operation
    assert op.kind == "taskcast.redrive" and op.state is TaskState.PENDING
    assert client.wait(op.id, timeout=30) == {"retried": 5, "skipped": 0, "total": 5}
    finished(client, runtime, TaskState.SUCCEEDED)
    layout = Layout(prefix)
    assert [len(retries(rdb, layout, i)) for i in runtime] == [1] * 5
    assert all(client.get(i).state is TaskState.FAILED for i in fatal)
    assert [len(retries(rdb, layout, i)) for i in fatal] == [0, 0]
    progress = [e for e in client.watch(op.id) if e.type == "progress"]
    assert (progress[-1].progress, progress[-1].message) == (1.0, "retried 5, skipped 0 of 5")
    again = client.redrive(
        labels={"batch": batch}, error_type="RuntimeError", max_per_second=1000, request_id=key
    )
    assert again.operation is not None and again.operation.id == op.id
    assert (again.created, again.count) == (False, 5)
    with pytest.raises(AlreadyExistsError):
        client.redrive(labels={"batch": batch}, max_per_second=1000, request_id=key)


def test_tasks_no_longer_failed_are_skipped(client: TaskClient) -> None:
    batch = uuid.uuid4().hex
    ids = failed_tasks(client, batch, 3)
    client.retry(ids[0])  # retried meanwhile: PENDING, then SUCCEEDED
    finished(client, ids[:1], TaskState.SUCCEEDED)
    started = client.redrive(labels={"batch": batch}, max_per_second=100)
    assert started.count == 2 and started.operation is not None
    assert client.wait(started.operation.id, timeout=30)["retried"] == 2


def test_the_rate_holds_in_every_second(client: TaskClient, rdb: redis.Redis, prefix: str) -> None:
    batch = uuid.uuid4().hex
    ids = failed_tasks(client, batch, 24)
    started = client.redrive(labels={"batch": batch}, max_per_second=8)
    assert started.operation is not None
    assert client.wait(started.operation.id, timeout=30)["retried"] == 24
    times = [t for i in ids for t in retries(rdb, Layout(prefix), i)]
    assert len(times) == 24
    assert most_in_one_second(times) <= 8


def test_cancel_stops_the_operation_and_retry_resumes_it(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    batch = uuid.uuid4().hex
    ids = failed_tasks(client, batch, 16)
    started = client.redrive(labels={"batch": batch}, max_per_second=4)
    assert started.operation is not None
    op = client.handle(started.operation.id)
    with op.watch() as events:
        for event in events:
            if event.type == "progress":
                break  # it is running, with a few retried
    op.cancel()
    eventually(lambda: op.get().state is TaskState.CANCELLED, 20, "the operation cancelled")
    layout = Layout(prefix)
    retried = [i for i in ids if retries(rdb, layout, i)]
    counts = rdb.hgetall(layout.redrive(op.id))
    assert 0 < len(retried) < 16
    assert int(counts[b"retried"]) == len(retried) == int(counts[b"cursor"])
    left = set(ids) - set(retried)
    assert all(client.get(i).state is TaskState.FAILED for i in left)
    # Redriving "every CANCELLED task" does not resume the operation; naming its kind does.
    assert client.redrive(states=["CANCELLED"], dry_run=True).count == 0
    resume = client.redrive(states=["CANCELLED"], kind="taskcast.redrive", dry_run=True)
    assert resume.sample_task_ids == [op.id]
    # RetryTask of the operation goes on from its cursor: every task retried once in all.
    op.retry()
    assert op.wait(timeout=30) == {"retried": 16, "skipped": 0, "total": 16}
    assert [len(retries(rdb, layout, i)) for i in ids] == [1] * 16


def test_bad_requests_name_each_field(client: TaskClient) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.redrive(states=["RUNNING"], max_per_second=0)
    assert "filter.states" in str(info.value) and "max_per_second" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="max_per_second"):
        client.redrive(max_per_second=20_000)
    with pytest.raises(InvalidArgumentError, match="sample_size"):
        client.redrive(dry_run=True, sample_size=101)
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(InvalidArgumentError, match="finished_before"):
        client.redrive(dry_run=True, finished_after=now, finished_before=now)
    with pytest.raises(InvalidArgumentError) as info:
        client.redrive(dry_run=True, kind="no kind")
    assert [f for f, _ in info.value.violations] == ["filter.kind"]


def test_states_by_name_one_or_many(client: TaskClient) -> None:
    """One state given as a string is that state (it was split into its letters, a ValueError
    about 'TASK_STATE_F'); an unknown name says which are known."""
    batch = uuid.uuid4().hex
    failed_tasks(client, batch, 1)
    for states in ("FAILED", "failed", ["FAILED"]):
        assert client.redrive(states=states, labels={"batch": batch}, dry_run=True).count == 1
    assert client.redrive(states="CANCELLED", labels={"batch": batch}, dry_run=True).count == 0
    with pytest.raises(ValueError, match="unknown state 'FAIL': one of PENDING, RUNNING, "):
        client.redrive(states=["FAIL"], dry_run=True)
    with pytest.raises(ValueError, match="unknown state 'bogus'"):
        list(client.list(state="bogus"))
    with pytest.raises(ValueError, match="limit must be 0 or more"):
        list(client.list(limit=-5))  # it listed every task but the last 5 of each page


def test_a_filter_field_is_named_as_the_request_names_it(grpc_stub: Any) -> None:
    """The field violations name the RedriveFilter's fields (were "state" and "kind": no such
    fields of the request)."""
    bad = pb.RedriveFilter(states=[cast("Any", 99)], kind="no kind")  # no TaskState has it
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub.RedriveTasks(pb.RedriveTasksRequest(filter=bad, dry_run=True), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None
    (detail,) = status.details
    found = error_details_pb2.BadRequest()
    detail.Unpack(found)
    assert {v.field for v in found.field_violations} == {"filter.states", "filter.kind"}
    assert "filter.states: unknown state 99" in info.value.details()


async def test_async_client_dry_run(grpc_addr: str) -> None:
    async with AsyncTaskClient(grpc_addr) as client:
        preview = await client.redrive(kind="no.such.kind", dry_run=True)
    assert (preview.count, preview.sample_task_ids) == (0, [])
