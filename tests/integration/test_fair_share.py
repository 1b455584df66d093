"""Priorities and fair share against a real server and real workers: which ready task starts
first. Tenant acme has weight 3 in the tenants file, beta the default 1; the default tenant
submits with its token from TASKCAST_AUTH_TOKENS.

Each test (but the last) lets a backlog build while no worker runs, then starts one worker with
one thread and reads the order in which the tasks started (`test.ordered` appends its tag to a
Redis list as it starts), so the order is the one the fetches chose.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import InvalidArgumentError, TaskClient, TaskHandle, TaskSpec, TaskState
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from taskcast.server.tenants import TenantsError, load
from tests.support import WorkerGroup, eventually

ACME, BETA, DEFAULT = "token-acme", "token-beta", "token-default"


@pytest.fixture(scope="module")
def server_settings(
    redis_server: RedisProcess, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> ServerSettings:
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(
        f'[tenants.acme]\ntokens = ["{ACME}"]\nweight = 3\n[tenants.beta]\ntokens = ["{BETA}"]\n'
    )
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        auth_tokens=DEFAULT,
        tenants_file=str(path),
    )


@pytest.fixture(scope="module")
def clients(grpc_addr: str) -> Iterator[dict[str, TaskClient]]:
    made = {t: TaskClient(grpc_addr, token=t) for t in (ACME, BETA, DEFAULT)}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture
def log(rdb: redis.Redis) -> Iterator[str]:
    """A fresh Redis list the tasks append their tags to as they start."""
    name = f"tests.started.{uuid.uuid4().hex}"
    yield name
    rdb.delete(name)


def started(rdb: redis.Redis, log: str) -> list[str]:
    return [t.decode() for t in cast("list[bytes]", rdb.lrange(log, 0, -1))]


def fetched_not_started(rdb: redis.Redis, prefix: str) -> int:
    """Messages of the default queue some consumer fetched and has not started (`begin` takes
    a message out of its consumer's ack set as the attempt starts)."""
    acks = Layout(prefix).mq.acks("*", "default")
    return sum(rdb.scard(k) for k in rdb.scan_iter(match=acks))


def no_worker_running(workers: WorkerGroup) -> None:
    """The kinds registered and no worker running: what is submitted now waits."""
    workers.start(threads=1).stop()


def ordered(client: TaskClient, log: str, tag: str, **options: Any) -> TaskHandle:
    seconds = options.pop("seconds", 0)
    fail_first = options.pop("fail_first", False)
    payload = {"log": log, "tag": tag, "seconds": seconds, "fail_first": fail_first}
    return client.submit("test.ordered", payload, **options)


def many(
    client: TaskClient, log: str, tag: str, n: int, seconds: float = 0, **options: Any
) -> list[TaskHandle]:
    """`n` tasks tagged `tag-0` ... in one SubmitTasks call (in that order)."""
    payloads = [{"log": log, "tag": f"{tag}-{i}", "seconds": seconds} for i in range(n)]
    items = [TaskSpec("test.ordered", p, **options) for p in payloads]
    out = client.submit_many(items)
    assert all(isinstance(h, TaskHandle) for h in out), out
    return [h for h in out if isinstance(h, TaskHandle)]


def finish(handles: list[TaskHandle]) -> None:
    for h in handles:
        h.wait(timeout=60)


def test_higher_priority_tasks_submitted_after_a_backlog_start_first(
    clients: dict[str, TaskClient], workers: WorkerGroup, rdb: redis.Redis, log: str
) -> None:
    client = clients[DEFAULT]
    no_worker_running(workers)
    handles = many(client, log, "low", 6, priority=5)
    handles += many(client, log, "normal", 6)  # priority 3, the default
    handles += many(client, log, "urgent", 6, priority=1)
    handles += many(client, log, "high", 6, priority=2)
    workers.start(threads=1)
    finish(handles)
    expected = [f"{tag}-{i}#1" for tag in ("urgent", "high", "normal", "low") for i in range(6)]
    assert started(rdb, log) == expected  # by priority, then oldest first
    assert (handles[0].get().priority, handles[6].get().priority) == (5, 3)


def test_delayed_and_retried_tasks_keep_their_priority(
    clients: dict[str, TaskClient], workers: WorkerGroup, rdb: redis.Redis, log: str
) -> None:
    """A backlog of 20 default-priority tasks of 200 ms each; an urgent task that fails once (its
    retry waits on the delay queue) and an urgent delayed one each start long before the
    backlog drains (within 10 starts: 2 s, for a retry due 0.1 s after its first attempt), where
    a task that lost its priority would start after all 20."""
    client = clients[DEFAULT]
    no_worker_running(workers)
    handles = many(client, log, "backlog", 20, seconds=0.2)
    handles.append(ordered(client, log, "retried", fail_first=True, priority=1))
    handles.append(ordered(client, log, "delayed", delay=0.2, priority=1))
    workers.start(threads=1)
    finish(handles)
    order = started(rdb, log)
    assert len(order) == 23 and order[0] == "retried#1"
    assert order.index("retried#2") < 10
    assert order.index("delayed#1") < 10
    assert handles[-2].get().attempt == 2


def test_tenants_share_starts_by_their_weights(
    clients: dict[str, TaskClient], workers: WorkerGroup, rdb: redis.Redis, log: str
) -> None:
    no_worker_running(workers)
    handles = many(clients[BETA], log, "beta", 40)  # beta first: age does not decide
    handles += many(clients[ACME], log, "acme", 40)
    workers.start(threads=1)
    finish(handles)
    first = [tag.split("-")[0] for tag in started(rdb, log)[:40]]
    # Stride scheduling gives exactly 3 acme starts to each of beta's (weights 3 and 1).
    assert abs(first.count("acme") - 30) <= 1, first
    assert handles[40].get().tenant == "acme"


def test_fairness_keys_share_a_tenants_starts_by_their_weights(
    clients: dict[str, TaskClient], workers: WorkerGroup, rdb: redis.Redis, log: str
) -> None:
    client = clients[DEFAULT]
    no_worker_running(workers)
    handles = many(client, log, "bulk", 30, fairness_key="bulk-import")
    handles += many(client, log, "vip", 30, fairness_key="customer-7", fairness_weight=2)
    handles += many(client, log, "plain", 30)  # no key: the default tenant's own list
    workers.start(threads=1)
    finish(handles)
    first = [tag.split("-")[0] for tag in started(rdb, log)[:40]]
    # Weights 1, 2 and 1: half of the starts go to the vip key, a quarter to each other.
    assert abs(first.count("vip") - 20) <= 1, first
    assert abs(first.count("bulk") - 10) <= 1, first
    assert abs(first.count("plain") - 10) <= 1, first
    task = handles[30].get()
    assert (task.fairness_key, task.fairness_weight) == ("customer-7", 2.0)


def test_the_queue_depth_counts_the_tasks_waiting_by_priority_and_fair_share(
    clients: dict[str, TaskClient], workers: WorkerGroup, log: str
) -> None:
    client = clients[DEFAULT]
    no_worker_running(workers)
    before = {q.name: q.depth for q in client.stats().queues}.get("default", 0)
    handles = many(client, log, "urgent", 4, priority=1) + many(client, log, "plain", 3)
    handles += many(clients[BETA], log, "beta", 2)
    depth = {q.name: q.depth for q in client.stats().queues}["default"]
    assert depth - before == 9
    workers.start(threads=2)
    finish(handles)
    assert {q.name: q.depth for q in client.stats().queues}["default"] == 0


def test_a_graceful_stop_hands_fetched_tasks_back_to_their_buckets(
    clients: dict[str, TaskClient],
    workers: WorkerGroup,
    rdb: redis.Redis,
    log: str,
    prefix: str,
) -> None:
    """One thread, so a prefetch of 2: the worker holds a fetched urgent task it has not
    started when it is stopped; the task goes back to the priority-1 bucket, not to the
    queue's own list (where it would start after the whole default-priority backlog)."""
    client = clients[DEFAULT]
    no_worker_running(workers)
    # The first runs long enough that the stop always finds it running (on a loaded machine a
    # 1 s task once ended before the signal arrived, and the thread took the next one).
    urgent = [
        ordered(client, log, f"urgent-{i}", seconds=5 if i == 0 else 1, priority=1)
        for i in range(3)
    ]
    worker = workers.start(threads=1)
    eventually(
        lambda: rdb.llen(log) == 1 and fetched_not_started(rdb, prefix) == 1, 20, "a prefetch"
    )
    worker.stop()
    mq = Layout(prefix).mq
    assert rdb.llen(mq.queue("default")) == 0
    assert rdb.llen(mq.bucket("default", 1)) == 2  # the fetched one back, and the third
    backlog = many(client, log, "normal", 5)
    workers.start(threads=1)
    finish(urgent + backlog)
    assert started(rdb, log) == [
        "urgent-0#1",
        "urgent-1#1",
        "urgent-2#1",
        *(f"normal-{i}#1" for i in range(5)),
    ]


def test_nothing_waiting_in_buckets_is_lost_when_a_worker_is_killed(
    clients: dict[str, TaskClient],
    workers: WorkerGroup,
    rdb: redis.Redis,
    log: str,
    prefix: str,
) -> None:
    """kill -9 of a worker running and holding tasks taken from the buckets: its running ones
    are reaped into their buckets again, its fetched ones put back by Dramatiq (on the queue's
    own list, which the fetch serves as the default bucket); every task succeeds, once."""
    quick = {"TASKCAST_MQ_HEARTBEAT_TIMEOUT": "3", "TASKCAST_MQ_MAINTENANCE_CHANCE": "100000"}
    no_worker_running(workers)
    handles = many(clients[ACME], log, "acme", 20, seconds=0.2, priority=2)
    handles += many(clients[BETA], log, "beta", 20, seconds=0.2, fairness_key="k")
    victim = workers.start(threads=2, extra_env=quick)
    eventually(
        lambda: rdb.llen(log) >= 2 and fetched_not_started(rdb, prefix) > 0,
        20,
        "tasks running and more fetched",
    )
    victim.stop(signal.SIGKILL)
    workers.start(threads=2, extra_env=quick)
    finish(handles)
    assert all(h.get().state is TaskState.SUCCEEDED for h in handles)
    tags = {t.split("#")[0] for t in started(rdb, log)}
    assert tags == {f"{who}-{i}" for who in ("acme", "beta") for i in range(20)}


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"priority": 6}, "priority", "1 (starts first) to 5"),
        ({"priority": -1}, "priority", "0 means the default, 3"),
        ({"fairness_key": "a\nb"}, "fairness_key", "no control characters"),
        ({"fairness_key": "k" * 129}, "fairness_key", "1 to 128 bytes"),
        ({"fairness_key": "k", "fairness_weight": 1000}, "fairness_weight", "0.01 to 100"),
        ({"fairness_key": "k", "fairness_weight": float("nan")}, "fairness_weight", "0 means 1"),
        ({"fairness_weight": 2}, "fairness_weight", "give one"),
    ],
)
def test_a_bad_priority_or_fairness_key_is_refused_with_what_to_fix(
    clients: dict[str, TaskClient], options: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        clients[DEFAULT].submit("test.echo", {}, **options)
    violations = dict(caught.value.violations)
    assert says in violations[field], violations


@pytest.mark.parametrize("weight", ["0", "101", "true", '"2"'])
def test_a_tenants_file_with_a_bad_weight_names_it(tmp_path: Path, weight: str) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(f'[tenants.acme]\ntokens = ["t"]\nweight = {weight}\n')
    with pytest.raises(TenantsError, match=r"\[tenants.acme\] weight: a number from 0.01 to 100"):
        load([], [], str(path))


def test_a_tenants_burst_does_not_starve_anothers_trickle(
    clients: dict[str, TaskClient], workers: WorkerGroup, rdb: redis.Redis, log: str
) -> None:
    """Acme floods 5,000 tasks onto a running worker; beta's 20, submitted after, all start
    within their fair share (3 acme starts for each of beta's, by the weights), long before
    acme's backlog drains. (Last in the module: acme's backlog is left to the teardown.)"""
    workers.start(threads=2)
    many(clients[ACME], log, "acme", 5000)
    betas = many(clients[BETA], log, "beta", 20)
    finish(betas)
    order = [tag.split("-")[0] for tag in started(rdb, log)]
    first, last = order.index("beta"), len(order) - 1 - order[::-1].index("beta")
    # Between beta's first and last start: about 3 acme starts per beta start (57), plus what
    # the worker had fetched before (a prefetch of 4).
    assert order[first : last + 1].count("acme") <= 3 * 19 + 8, order[first : last + 1]
    assert order.count("acme") < 5000 - 1000  # acme's backlog was far from drained
