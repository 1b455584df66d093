"""Prometheus metrics: the real /metrics of a server and of a two-process worker, scraped over HTTP
on 127.0.0.1, move as tasks run."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Generator, Iterator
from functools import partial
from typing import cast

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import (
    AsyncTaskClient,
    Event,
    NotFoundError,
    TaskClient,
    TaskHandle,
    TaskState,
)
from taskcast.server.config import ServerSettings
from tests.support import WorkerProcess, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SERVER_PORT, WORKER_PORT = free_port(), free_port()
PROCESSES, THREADS = 2, 1


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there yet (a label set never counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def ended(handle: TaskHandle) -> bool:
    return handle.get().state.terminal


def server(name: str, **labels: str) -> float:
    return value(scrape(SERVER_PORT), name, **labels)


def worker_value(name: str, **labels: str) -> float:
    return value(scrape(WORKER_PORT), name, **labels)


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """The module's server, with its /metrics on a free port."""
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        keepalive=0.3,
        grace=1.0,
        metrics_port=SERVER_PORT,
    )


@pytest.fixture(scope="module")
def worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """Two worker processes of one thread each, serving their metrics on one port."""
    proc = WorkerProcess(
        redis_server.url,
        prefix,
        processes=PROCESSES,
        threads=THREADS,
        extra_env={"TASKCAST_METRICS_PORT": str(WORKER_PORT)},
    ).start()
    yield proc
    proc.stop()


def test_submits_are_counted_by_kind_and_queue(client: TaskClient, worker: WorkerProcess) -> None:
    name, labels = (
        "taskcast_tasks_submitted_total",
        {"kind": "test.echo", "queue": "default", "tenant": "default"},
    )
    before = server(name, **labels)
    handles = [client.submit("test.echo", {"i": i}, idempotency_key=f"k{i}") for i in range(3)]
    client.submit("test.echo", {"i": 0}, idempotency_key="k0")  # a repeat creates nothing
    assert server(name, **labels) == before + 3
    for h in handles:
        h.wait(timeout=30)


def test_attempts_are_counted_by_outcome_with_their_times(
    client: TaskClient, worker: WorkerProcess
) -> None:
    attempts = "taskcast_attempts_total"
    expected = {
        ("test.echo", "succeeded"): 1,
        ("test.fatal", "failed"): 1,
        ("test.flaky", "retrying"): 1,
        ("test.flaky", "succeeded"): 1,
        ("test.block", "cancelled"): 1,
    }
    counts = {
        "run": ("taskcast_run_seconds_count", {"test.echo": 1, "test.flaky": 2}),
        "wait": ("taskcast_schedule_to_start_seconds_count", {"test.echo": 1, "test.flaky": 1}),
        "ttfo": ("taskcast_time_to_first_output_seconds_count", {"test.chatty": 1}),
    }
    s = scrape(WORKER_PORT)
    before = {k: value(s, attempts, kind=k[0], outcome=k[1], tenant="default") for k in expected}
    times = {
        (name, kind): value(s, name, kind=kind)
        for name, per_kind in counts.values()
        for kind in per_kind
    }

    client.submit("test.echo", {}).wait(timeout=30)
    client.submit("test.flaky", {}).wait(timeout=30)
    client.submit("test.chatty", {"n": 2}).wait(timeout=30)
    fatal = client.submit("test.fatal", {})
    blocked = client.submit("test.block", {"seconds": 60})
    eventually(lambda: blocked.get().state is TaskState.RUNNING, 30, "the blocking task running")
    blocked.cancel()
    for h in (fatal, blocked):
        eventually(partial(ended, h), 30, "the task's end")

    # At least: on a loaded machine a 2 s lease (tests/support.py) can lapse, and a reaped
    # attempt runs again and counts twice.
    def moved() -> bool:  # the outcome is counted just after it is recorded
        s = scrape(WORKER_PORT)
        done = all(
            value(s, attempts, kind=k[0], outcome=k[1], tenant="default") >= before[k] + n
            for k, n in expected.items()
        )
        return done and all(
            value(s, name, kind=kind) >= times[name, kind] + n
            for name, per_kind in counts.values()
            for kind, n in per_kind.items()
        )

    eventually(moved, 20, "attempts and histograms counted")


def test_queue_gauges_equal_get_stats(client: TaskClient, worker: WorkerProcess) -> None:
    # Two threads in all: 2 tasks run, 2 more are fetched (prefetch 2 per process: they are
    # neither in the queue nor running), the rest wait in the queue; one more is delayed.
    blocked = [client.submit("test.block", {"seconds": 60}) for _ in range(7)]
    delayed = client.submit("test.echo", {}, delay=3600)

    def same() -> bool:
        q = next(q for q in client.stats().queues if q.name == "default")
        s = scrape(SERVER_PORT)
        gauges = [
            value(s, f"taskcast_queue_{name}", queue="default")
            for name in ("depth", "delayed", "running")
        ]
        return gauges == [q.depth, q.delayed, q.running] and q.running == 2 and q.depth == 3

    try:
        eventually(same, 30, "queue gauges equal to GetStats with 3 queued, 2 running")
        assert server("taskcast_queue_delayed", queue="default") >= 1
    finally:
        for h in (*blocked, delayed):
            h.cancel()
        for h in blocked:
            eventually(partial(ended, h), 30, "blocked task cancelled")


def test_worker_slots_and_threads_sum_over_its_processes(worker: WorkerProcess) -> None:
    def sums() -> bool:
        s = scrape(WORKER_PORT)
        slots = sum(value(s, "taskcast_worker_slots", state=x) for x in ("used", "free"))
        threads = sum(value(s, "taskcast_worker_threads", state=x) for x in ("busy", "idle"))
        return slots == PROCESSES * 1000 and threads == PROCESSES * THREADS

    eventually(sums, 20, "slots and threads of both processes")


def test_watch_streams_open_resumed_and_ended_early(
    client: TaskClient, worker: WorkerProcess
) -> None:
    opened, resumed = "taskcast_watch_streams_open", "taskcast_watch_streams_resumed_total"
    early = ("taskcast_watch_streams_ended_early_total", {"reason": "client_gone"})
    open_before, resumed_before = server(opened), server(resumed)
    early_before = server(early[0], **early[1])
    handle = client.submit("test.block", {"seconds": 60})
    eventually(lambda: handle.get().state is TaskState.RUNNING, 30, "the blocking task running")

    first = cast("Generator[Event, None, None]", handle.watch(after_sequence=1))  # a resume
    next(first)  # its first event arrived: the stream is open
    assert server(opened) == open_before + 1
    assert server(resumed) == resumed_before + 1

    ended = threading.Event()

    def follow() -> None:
        for event in handle.watch():
            if event.terminal:
                ended.set()

    follower = threading.Thread(target=follow)
    follower.start()
    eventually(lambda: server(opened) == open_before + 2, 10, "a second stream open")
    first.close()  # the client goes away before the end
    eventually(lambda: server(opened) == open_before + 1, 10, "the abandoned stream closed")
    eventually(lambda: server(early[0], **early[1]) == early_before + 1, 10, "counted as early")

    handle.cancel()
    follower.join(30)
    assert ended.is_set()
    eventually(lambda: server(opened) == open_before, 10, "the finished stream closed")
    assert server(early[0], **early[1]) == early_before + 1  # one that saw the end is not early


def test_rpcs_are_counted_by_method_and_code(client: TaskClient, worker: WorkerProcess) -> None:
    requests, durations = "taskcast_rpc_requests_total", "taskcast_rpc_duration_seconds_count"
    get, submit = "taskcast.v1.TaskService/GetTask", "taskcast.v1.TaskService/SubmitTask"
    s = scrape(SERVER_PORT)
    before = (
        value(s, requests, method=get, code="NOT_FOUND"),
        value(s, requests, method=submit, code="OK"),
        value(s, requests, method=get, code="OK"),
        value(s, durations, method=get),
    )
    with pytest.raises(NotFoundError):
        client.get("0" * 32)
    client.get(client.submit("test.echo", {}).id)

    def counted() -> bool:  # an aborted call's status leaves before its handler has returned
        s = scrape(SERVER_PORT)
        return (
            value(s, requests, method=get, code="NOT_FOUND"),
            value(s, requests, method=submit, code="OK"),
            value(s, requests, method=get, code="OK"),
            value(s, durations, method=get),
        ) == (before[0] + 1, before[1] + 1, before[2] + 1, before[3] + 2)

    eventually(counted, 10, "calls counted by method and code")


GET_TASK = "taskcast.v1.TaskService/GetTask"


def gets(code: str) -> float:
    """GetTask calls the server counted with `code`."""
    return server("taskcast_rpc_requests_total", method=GET_TASK, code=code)


def no_get_since(ok: float, missing: float) -> None:
    """No GetTask answered OK since `ok` was read: a GetTask of a missing task, made after the
    calls in question, is counted first (it marks when their counts would have landed)."""
    eventually(lambda: gets("NOT_FOUND") == missing + 1, 10, "the marker GetTask counted")
    assert gets("OK") == ok


def test_wait_takes_a_success_off_its_stream(client: TaskClient, worker: WorkerProcess) -> None:
    ok, missing = gets("OK"), gets("NOT_FOUND")
    assert client.submit("test.echo", {"n": 0}).wait(30) == {"payload": {"n": 0}, "attempt": 1}
    with pytest.raises(NotFoundError):
        client.get("0" * 32)
    no_get_since(ok, missing)  # the result came with the SUCCEEDED event: no GetTask after it


async def test_async_wait_takes_a_success_off_its_stream(
    grpc_addr: str, worker: WorkerProcess
) -> None:
    ok, missing = gets("OK"), gets("NOT_FOUND")
    async with AsyncTaskClient(grpc_addr) as client:
        handle = await client.submit("test.echo", {"n": 1})
        assert await handle.wait(30) == {"payload": {"n": 1}, "attempt": 1}
        with pytest.raises(NotFoundError):
            await client.get("0" * 32)
    no_get_since(ok, missing)


def test_a_bad_request_is_counted_with_its_code(grpc_addr: str) -> None:
    method = "taskcast.v1.TaskService/SubmitTask"
    before = server("taskcast_rpc_requests_total", method=method, code="INVALID_ARGUMENT")
    with grpc.insecure_channel(grpc_addr) as channel:
        call = channel.unary_unary(f"/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff", timeout=10)  # not a SubmitTaskRequest
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    eventually(
        lambda: (
            server("taskcast_rpc_requests_total", method=method, code="INVALID_ARGUMENT")
            == before + 1
        ),
        10,
        "the malformed call counted",
    )
