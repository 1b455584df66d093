"""Per-key concurrency and rate limits, enforced across real worker processes."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from taskcast.client import InvalidArgumentError, TaskClient, TaskHandle, TaskState
from taskcast.core import mqlayout
from taskcast.core.layout import Layout
from tests.support import WorkerGroup, WorkerProcess, eventually


@pytest.fixture
def counter(rdb: redis.Redis) -> Iterator[str]:
    """A fresh Redis counter the limited test kinds count themselves running under."""
    name = f"tests.running.{uuid.uuid4().hex}"
    yield name
    rdb.delete(name, name + ".max")


def most_at_once(rdb: redis.Redis, counter: str) -> int:
    return int(rdb.zscore(counter + ".max", "max") or 0)


def succeeded(handles: list[TaskHandle], timeout: float = 60) -> list[int]:
    """Each task's result (its attempt number), once each has SUCCEEDED."""
    return [h.wait(timeout=timeout) for h in handles]


def start(workers: WorkerGroup, n: int) -> list[WorkerProcess]:
    return [workers.start(threads=4) for _ in range(n)]


def test_a_concurrency_key_runs_at_most_its_limit_at_once_across_three_workers(
    client: TaskClient, workers: WorkerGroup, rdb: redis.Redis, counter: str
) -> None:
    start(workers, 3)
    customer = uuid.uuid4().hex
    payload = {"customer": customer, "counter": counter, "seconds": 0.2}
    handles = [client.submit("test.limited", payload) for _ in range(30)]
    # Held back is not an attempt: every task ran once, on its first attempt.
    assert succeeded(handles) == [1] * 30
    assert most_at_once(rdb, counter) == 3
    task = handles[0].get()
    assert task.limits is not None and task.limits["concurrency_key"] == customer
    assert task.limits["concurrency_limit"] == 3 and task.attempt == 1


def test_a_submits_own_concurrency_limit_holds_a_sync_kind_across_two_workers(
    client: TaskClient, workers: WorkerGroup, rdb: redis.Redis, counter: str
) -> None:
    start(workers, 2)
    key = f"acct-{uuid.uuid4().hex[:8]}"
    payload = {"counter": counter, "seconds": 0.1}
    handles = [
        client.submit("test.counted", payload, concurrency_key=key, concurrency_limit=2)
        for _ in range(12)
    ]
    assert succeeded(handles) == [1] * 12
    assert most_at_once(rdb, counter) == 2


def test_a_rate_limit_holds_every_second_to_its_limit_across_three_workers(
    client: TaskClient, workers: WorkerGroup
) -> None:
    start(workers, 3)
    account = uuid.uuid4().hex
    handles = [client.submit("test.rated", {"account": account}) for _ in range(200)]
    results = succeeded(handles, timeout=90)
    # The start time is stamped by the script that admitted the attempt (Redis's clock), so it
    # is the time the limit judged; the handler's own reading comes a few ms later.
    starts = sorted(int(h.get().started_at.timestamp() * 1000) for h in handles)  # type: ignore[union-attr]
    assert all(r >= s for r, s in zip(sorted(results), starts, strict=True))
    # No window of one second, wherever it begins, holds more than 20 starts.
    assert max(sum(1 for t in starts[i:] if t < s + 1000) for i, s in enumerate(starts)) <= 20
    assert max(Counter(t // 1000 for t in starts).values()) <= 20  # calendar seconds too
    # Over the run, starts come at the limit, within 5% (a late start does not push the next).
    rate = (len(starts) - 1) * 1000 / (starts[-1] - starts[0])
    assert 19 <= rate <= 21, rate


def test_a_killed_workers_shares_come_back_within_the_lease_and_nothing_is_lost(
    client: TaskClient, workers: WorkerGroup, rdb: redis.Redis, counter: str
) -> None:
    # A held-back message may wait in the killed process's delay-queue consumer: the survivor
    # puts it back once that process has been silent for the broker heartbeat timeout.
    quick = {"TASKCAST_MQ_HEARTBEAT_TIMEOUT": "3", "TASKCAST_MQ_MAINTENANCE_CHANCE": "100000"}
    doomed = workers.start(threads=4, extra_env=quick)
    key = f"k-{uuid.uuid4().hex[:8]}"
    payload = {"customer": "unused", "counter": counter, "seconds": 0.2}

    def submit(**more: float) -> TaskHandle:
        return client.submit(
            "test.limited", {**payload, **more}, concurrency_key=key, concurrency_limit=2
        )

    first = [submit(first=60), submit(first=60)]  # held until the kill
    eventually(lambda: all(h.get().state is TaskState.RUNNING for h in first), 20, "both running")
    survivor = workers.start(threads=4, extra_env=quick)
    later = [submit(), submit()]
    eventually(lambda: all(h.get().waiting_for == "concurrency" for h in later), 20, "waiting")
    doomed.stop(signal.SIGKILL)
    # Its two handlers never count themselves out: start counting afresh (their leases, renewed
    # every 0.4 s, hold the shares for 1.6 s more at least, so nothing else started yet).
    rdb.delete(counter, counter + ".max")
    # The lease is 2 s in tests: the shares expire with it, and the survivor takes them.
    eventually(
        lambda: any(h.get().state is TaskState.RUNNING for h in later), 10, "a share came back"
    )
    assert sorted(succeeded(first + later)) == [1, 1, 2, 2]  # the killed ones ran again
    assert most_at_once(rdb, counter) <= 2
    survivor.stop()


def _holds(rdb: redis.Redis, prefix: str, task_id: str) -> int:
    """How often the delivery of `task_id` waiting on the delay queue has been held back."""
    for raw in rdb.hvals(Layout(prefix).mq.msgs(mqlayout.delayed("default"))):
        message = json.loads(raw)
        if message["message_id"] == task_id:
            return int(message["options"].get("tc_holds") or 0)
    return 0


def test_a_wait_is_one_waiting_event_that_watchers_see(
    client: TaskClient, workers: WorkerGroup, rdb: redis.Redis, prefix: str
) -> None:
    workers.start(threads=4)
    key = f"solo-{uuid.uuid4().hex[:8]}"
    blocker = client.submit("test.block", {"seconds": 60}, concurrency_key=key, concurrency_limit=1)
    eventually(lambda: blocker.get().state is TaskState.RUNNING, 20, "the blocker running")
    waiter = client.submit("test.echo", {}, concurrency_key=key, concurrency_limit=1)
    eventually(lambda: _holds(rdb, prefix, waiter.id) >= 3, 20, "three tries held back")
    task = waiter.get()
    assert task.state is TaskState.PENDING and task.attempt == 0
    assert task.waiting_for == "concurrency"
    stats = client.stats()
    mine = [x for x in stats.limits if x.key == key]
    assert [(x.reason, x.limit, x.running, x.waiting) for x in mine] == [("concurrency", 1, 1, 1)]
    blocker.cancel()
    assert waiter.wait(timeout=30)["attempt"] == 1
    events = list(waiter.watch(timeout=30))
    waits = [e for e in events if e.type == "waiting"]
    assert [(e.reason, e.key, e.limit, e.attempt) for e in waits] == [("concurrency", key, 1, 1)]
    kinds = [e.type if e.type != "state" else e.state for e in events]
    assert kinds == [TaskState.PENDING, "waiting", TaskState.RUNNING, TaskState.SUCCEEDED]
    assert waiter.get().waiting_for == ""


@pytest.mark.parametrize(
    ("options", "fields"),
    [
        ({"concurrency_key": "k"}, ["concurrency_limit"]),
        ({"concurrency_limit": 3}, ["concurrency_key"]),
        ({"concurrency_key": "k", "concurrency_limit": 10_001}, ["concurrency_limit"]),
        (
            {"concurrency_key": "x" * 129, "concurrency_limit": -1},
            [
                "concurrency_key",
                "concurrency_limit",
            ],
        ),
    ],
)
def test_bad_limits_at_submit_name_each_field(
    client: TaskClient, worker: WorkerProcess, options: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("test.echo", {}, **options)  # type: ignore[arg-type]
    assert [f for f, _ in info.value.violations] == fields


def test_a_payload_without_the_kinds_key_field_is_refused(
    client: TaskClient, worker: WorkerProcess
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("test.limited", {"counter": "c"})
    assert info.value.violations[0][0] == "payload_json.customer"
    assert "{payload.customer}" in info.value.violations[0][1]
