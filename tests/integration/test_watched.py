"""Live events are published only for watched tasks, and every watch still sees every event.

The module's server renews interest every 0.2 s (`watch_interest` 0.6) and sends keep-alives only
every 30 s: a watch that missed a publish would wait for that idle check, so these tests fail on a
missed publish instead of papering over it. A raw SUBSCRIBE on the live channel shows what was
published; a marker published after the fact tells when everything before it has arrived.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import Event, TaskClient, TaskHandle, TaskState
from taskcast.core.layout import Layout
from taskcast.core.scripts import redis_ms
from taskcast.server.app import Running, create_server
from taskcast.server.config import ServerSettings
from tests.support import LoopThread, eventually, settings_for

pytestmark = pytest.mark.usefixtures("worker")

INTEREST = 0.6  # seconds; renewed every 0.2 s


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    return settings_for(redis_server, prefix, keepalive=30.0, watch_interest=INTEREST)


class Live:
    """A raw subscriber of the live channel: what Redis published, by task."""

    def __init__(self, rdb: redis.Redis, channel: str) -> None:
        self.rdb, self.channel = rdb, channel
        self.sub = rdb.pubsub(ignore_subscribe_messages=True)
        self.sub.subscribe(channel)
        self.seen: dict[str, list[int]] = {}
        self.drain()  # the subscription is confirmed once a marker comes back through it

    def drain(self) -> dict[str, list[int]]:
        """Everything published so far: a marker is published, then read up to it."""
        marker = f"marker-{uuid.uuid4().hex}"
        self.rdb.publish(self.channel, f"{marker} 0 []")
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the marker did not come back"
            msg = self.sub.get_message(timeout=1)  # None too for a skipped subscribe reply
            if msg is None:
                continue
            task_id, seq, _ = msg["data"].decode().split(" ", 2)
            if task_id == marker:
                return self.seen
            self.seen.setdefault(task_id, []).append(int(seq))

    def close(self) -> None:
        self.sub.close()


@pytest.fixture
def live(rdb: redis.Redis, prefix: str) -> Iterator[Live]:
    subscriber = Live(rdb, Layout(prefix).live_channel())
    yield subscriber
    subscriber.close()


def interest(rdb: redis.Redis, prefix: str, task_id: str) -> float | None:
    """When the task's interest lapses (Redis ms), None when nobody registered it."""
    return rdb.zscore(Layout(prefix).watched(), task_id)


def routes(running: Running, task_id: str) -> bool:
    """Whether that server routes the task's live events to a watcher."""
    return task_id in running.service.fanout.watchers


class Collector:
    """A watch drained on a thread of its own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.events: list[Event] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.stream as events:
            for event in events:
                self.events.append(event)

    def join(self) -> list[Event]:
        self.thread.join(20)
        assert not self.thread.is_alive(), "the watch did not end"
        return self.events


BLOCKED: list[TaskHandle] = []  # this test's blocked tasks, cancelled when it ends


@pytest.fixture(autouse=True)
def cancel_blocked() -> Iterator[None]:
    """A test that fails before its cancel would leave its task holding one of the worker's
    four threads for a minute, and the next tests' tasks waiting for a thread."""
    yield
    while BLOCKED:
        with contextlib.suppress(Exception):
            BLOCKED.pop().cancel()


def blocked(client: TaskClient, **labels: str) -> TaskHandle:
    """A test.block task that has reported its progress (sequence 3) and waits for a cancel."""
    handle = client.submit("test.block", {"seconds": 60}, labels=labels or None)
    BLOCKED.append(handle)
    eventually(lambda: client.get(handle.id).last_sequence >= 3, what="block's progress")
    return handle


def sequences(events: list[Event], task_id: str | None = None) -> list[int]:
    return [e.sequence for e in events if e.sequence and task_id in (None, e.task_id)]


def test_an_unwatched_task_publishes_nothing_and_a_later_watch_sees_it_all(
    client: TaskClient, live: Live
) -> None:
    handle = client.submit("test.chatty", {"n": 5})
    eventually(lambda: client.get(handle.id).state is TaskState.SUCCEEDED, what="chatty done")
    assert handle.id not in live.drain()
    events = list(handle.watch())
    assert sequences(events) == list(range(1, client.get(handle.id).last_sequence + 1))
    assert events[-1].state is TaskState.SUCCEEDED


def test_a_watch_publishes_from_its_admission_on(
    client: TaskClient, live: Live, rdb: redis.Redis, prefix: str
) -> None:
    handle = blocked(client)
    assert handle.id not in live.drain()  # PENDING, RUNNING, progress: nobody watched
    watch = Collector(handle.watch())
    eventually(lambda: interest(rdb, prefix, handle.id), what="interest registered")
    handle.cancel()
    events = watch.join()
    assert sequences(events) == [1, 2, 3, 4]
    assert events[-1].state is TaskState.CANCELLED
    assert live.drain()[handle.id] == [4]  # only the event after the admission


@pytest.mark.parametrize("after", [1, 2, 10, 40, 120])
def test_a_watch_opened_while_a_worker_writes_misses_nothing(
    client: TaskClient, live: Live, after: int
) -> None:
    handle = client.submit("test.chatty", {"n": 100})
    eventually(lambda: client.get(handle.id).last_sequence >= after, what=f"sequence {after}")
    events = list(handle.watch(timeout=20))
    last = client.get(handle.id).last_sequence
    assert sequences(events) == list(range(1, last + 1))
    published = live.drain().get(handle.id, [])
    # What was published is the tail after the admission, each event once.
    assert published == list(range(published[0], last + 1)) if published else True


def test_interest_outlives_its_first_ttl_while_the_stream_stays_open(
    client: TaskClient, live: Live, rdb: redis.Redis, prefix: str, grpc_server: Running
) -> None:
    handle = blocked(client)
    watch = Collector(handle.watch())
    first = eventually(lambda: interest(rdb, prefix, handle.id), what="interest registered")
    fanout = grpc_server.service.fanout
    renewals = fanout.renewals
    # Renewals every 0.2 s; after five of them the first registration (0.6 s) has run out.
    eventually(lambda: fanout.renewals >= renewals + 5, what="five renewals")
    assert redis_ms(rdb.time()) > first
    assert (interest(rdb, prefix, handle.id) or 0) > redis_ms(rdb.time())
    handle.cancel()
    assert sequences(watch.join()) == [1, 2, 3, 4]
    assert live.drain()[handle.id] == [4]


def test_two_servers_watch_one_task_and_one_keeps_the_interest_the_other_dropped(
    client: TaskClient,
    live: Live,
    rdb: redis.Redis,
    prefix: str,
    loop_thread: LoopThread,
    server_settings: ServerSettings,
    grpc_server: Running,
) -> None:
    other = loop_thread.run(create_server(server_settings))
    try:
        with TaskClient(f"127.0.0.1:{other.port}") as client_b:
            handle = blocked(client)
            here = Collector(handle.watch())
            there = Collector(client_b.handle(handle.id).watch())
            eventually(lambda: routes(grpc_server, handle.id), what="routed here")
            eventually(lambda: routes(other, handle.id), what="routed there")
            # The replay reached the client (routed on the server is not yet received here).
            eventually(lambda: len(sequences(here.events)) >= 3, what="the replay here")
            here.stream.close()  # this server's watch ends; it stops renewing the interest
            assert sequences(here.join()) == [1, 2, 3]
            eventually(lambda: handle.id not in grpc_server.service.fanout.watchers, what="gone")
            renewals = other.service.fanout.renewals
            # Past this server's last registration (0.6 s): only the other's renewals remain.
            eventually(lambda: other.service.fanout.renewals >= renewals + 5, what="renewals")
            handle.cancel()
            assert sequences(there.join()) == [1, 2, 3, 4]
            assert live.drain()[handle.id] == [4]  # published once
    finally:
        loop_thread.run(other.stop(0.5))


def test_a_group_watch_publishes_tasks_that_join_after_it_opened(
    client: TaskClient, live: Live, rdb: redis.Redis, prefix: str
) -> None:
    batch = uuid.uuid4().hex[:12]
    first = blocked(client, batch=batch)  # the group is open while it runs
    group = Collector(client.watch_group(f"batch={batch}", end_when_done=True))
    eventually(lambda: interest(rdb, prefix, first.id), what="the group opened")
    later = [blocked(client, batch=batch) for _ in range(3)]
    ids = [h.id for h in later]
    eventually(lambda: all(interest(rdb, prefix, t) for t in ids), what="the group took them")
    for handle in [first, *later]:
        handle.cancel()
    events = group.join()
    for handle in [first, *later]:
        assert sequences(events, handle.id) == [1, 2, 3, 4]
    published = live.drain()
    assert published[first.id] == [4]  # the cancel, live: it ran before the group opened
    for task_id in ids:  # taken in at the group's next look at its index: from there on
        assert published[task_id] == list(range(published[task_id][0], 5))


def test_a_resubscribing_server_registers_its_interest_again_before_it_resyncs(
    client: TaskClient,
    rdb: redis.Redis,
    prefix: str,
    loop_thread: LoopThread,
    server_settings: ServerSettings,
) -> None:
    # Renewals every 40 s: within the test only the one a new subscription makes runs. redis-py
    # re-makes a killed subscription by itself; the server must notice and renew all the same.
    slow = server_settings.model_copy(update={"watch_interest": 120.0})
    other = loop_thread.run(create_server(slow))
    try:
        with TaskClient(f"127.0.0.1:{other.port}") as client_b:
            handle = blocked(client)
            watch = Collector(client_b.handle(handle.id).watch())
            eventually(lambda: interest(rdb, prefix, handle.id), what="interest registered")
            # A failover to a replica that had not yet received the registration: it is gone,
            # and the subscription breaks.
            rdb.delete(Layout(prefix).watched())
            renewals = other.service.fanout.renewals
            rdb.client_kill_filter(_type="pubsub")
            eventually(lambda: other.service.fanout.renewals > renewals, what="resubscribed")
            assert interest(rdb, prefix, handle.id)
            with contextlib.closing(Live(rdb, Layout(prefix).live_channel())) as live:
                handle.cancel()
                assert sequences(watch.join()) == [1, 2, 3, 4]
                assert live.drain()[handle.id] == [4]
    finally:
        loop_thread.run(other.stop(0.5))
