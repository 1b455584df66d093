"""The wake-up rule is one rule (`wake()` in _lib.lua) for our enqueues and Dramatiq's."""

from __future__ import annotations

import threading

import dramatiq
import pytest
import redis
from dramatiq import Message

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskState
from taskcast.core import calls, mqlayout, scripts
from taskcast.core.layout import Layout
from taskcast.server.store import ServerStore, connect
from taskcast.worker.slots import Slots
from taskcast.worker.store import WorkerStore
from taskcast.worker.transport import Broker
from tests.support import drop_keys, eventually, new_task


def broker_on(redis_server: RedisProcess, layout: Layout, slots: int) -> tuple[redis.Redis, Broker]:
    """A taskcast broker of `layout` on the test Redis (no middleware), and a plain client."""
    rdb = redis.Redis.from_url(redis_server.url)
    broker = Broker(
        client=redis.Redis.from_url(redis_server.url),
        namespace=layout.namespace,
        store=WorkerStore(rdb, layout, threading.Event()),
        slots=Slots(slots),
        unserved_timeout=60,
        middleware=[],
    )
    return rdb, broker


async def test_one_wake_rule_for_our_enqueue_and_dramatiqs(redis_server: RedisProcess) -> None:
    layout = Layout("wakecheck")
    rdb, broker = broker_on(redis_server, layout, slots=1)
    store = ServerStore(connect(redis_server.url), layout)
    wake = layout.mq.wake("w")
    try:
        # Ours (submit.lua): a token when the queue was empty, none on a busy queue.
        await store.submit("a" * 32, new_task(queue="w"))
        await store.submit("b" * 32, new_task(queue="w"))
        assert rdb.llen(wake) == 1
        # Dramatiq's own enqueue (a delayed message moved on, a hand-back) goes through
        # route.lua, the same rule: none on a busy queue ...
        for _ in range(100):
            broker.enqueue(Message(queue_name="w", actor_name="a", args=(), kwargs={}, options={}))
        assert rdb.llen(layout.mq.queue("w")) == 102
        assert rdb.llen(wake) == 1
        # ... and one on an empty queue.
        rdb.delete(layout.mq.queue("w"), wake)
        broker.enqueue(Message(queue_name="w", actor_name="a", args=(), kwargs={}, options={}))
        assert rdb.llen(wake) == 1
        # At most 64 wait, whoever wrote them (wake.lua: a limit's deferral wakes a delay queue).
        wake_script, call = rdb.register_script(scripts.SOURCES["wake"]), calls.wake(layout, "w")
        for _ in range(100):
            wake_script(keys=call.keys, args=call.args)
        assert rdb.llen(wake) == 64
        rdb.delete(layout.mq.queue("w"))
        await store.submit("c" * 32, new_task(queue="w"))
        assert rdb.llen(wake) == 64  # full: the submit adds none either
    finally:
        drop_keys(rdb, layout)
        broker.close()
        rdb.close()
        await store.client.aclose()


def test_a_new_consumer_requeues_what_this_process_held_before_a_connection_error(
    redis_server: RedisProcess,
) -> None:
    """Dramatiq drops a consumer's in-memory messages on a connection error while their ids stay
    in this live process's ack set; the consumer made next puts them back on the queue."""
    layout = Layout("orphans")
    rdb, broker = broker_on(redis_server, layout, slots=10)
    queue = layout.mq.queue("live")
    dramatiq.Actor(
        lambda *_: None, broker=broker, actor_name="a", queue_name="live", priority=0, options={}
    )
    try:
        for i in range(3):
            broker.enqueue(
                Message(queue_name="live", actor_name="a", args=(i,), kwargs={}, options={})
            )
        first = broker.consume("live", prefetch=3, timeout=50)
        held = [next(first) for _ in range(3)]  # fetched: ids now in this process's ack set
        assert all(m is not None for m in held) and rdb.llen(queue) == 0
        # The connection drops: Dramatiq throws the consumer and its messages away, unacked.
        again = broker.consume("live", prefetch=3, timeout=50)
        assert rdb.llen(queue) == 3
        assert rdb.scard(layout.mq.acks(broker.broker_id, "live")) == 0
        refetched = [next(again) for _ in range(3)]
        assert sorted(m.args[0] for m in refetched if m) == [0, 1, 2]
    finally:
        drop_keys(rdb, layout)
        broker.close()
        rdb.close()


def brokers_of(rdb: redis.Redis, mq: mqlayout.MQLayout) -> list[str]:
    """The ids of the live Dramatiq brokers (one per worker process)."""
    return [b.decode() for b in rdb.zrange(mq.heartbeats(), 0, -1) if isinstance(b, bytes)]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("kind", ["test.echo", "test.async_echo"])
def test_begin_acknowledges_the_delivery(
    client: TaskClient, rdb: redis.Redis, prefix: str, kind: str
) -> None:
    """`begin` acks the attempt's Dramatiq message in its own script (the consumer skips its own
    round trip): once the task is RUNNING, the delivery is gone from the worker's ack set and
    the queue's message hash. Failures and retries leave nothing behind either."""
    layout = Layout(prefix)
    mq = layout.mq
    for n in range(10):
        handle = client.submit(kind, {"n": n})
        handle.wait(timeout=20)
        queue, rid = rdb.hmget(layout.task(handle.id), "mq", "rid")
        assert queue == b"default" and isinstance(rid, bytes)
        brokers = brokers_of(rdb, mq)
        assert brokers, "the worker records its heartbeat"
        assert not any(rdb.sismember(mq.acks(b, "default"), rid.decode()) for b in brokers)
        assert not rdb.hexists(mq.msgs("default"), rid)
    flaky, fatal = client.submit("test.flaky", {}), client.submit("test.fatal", {})
    assert flaky.wait(timeout=20) == 2
    eventually(lambda: fatal.get().state is TaskState.FAILED, 20, "test.fatal failed")

    def nothing_held() -> bool:
        brokers = brokers_of(rdb, mq)
        queues = ("default", mqlayout.delayed("default"))
        held = sum(rdb.scard(mq.acks(b, q)) for b in brokers for q in queues)
        return held == 0 and rdb.hlen(mq.msgs("default")) == 0

    eventually(nothing_held, 20, "every delivery acknowledged")


def test_a_fetch_that_leaves_messages_behind_passes_the_wake_up_on(
    redis_server: RedisProcess,
) -> None:
    """The fetch (`_fetch.lua`) that took all it had room for and left messages behind drops a
    token on the wake-up list, for another idle consumer; one that took the last leaves none."""
    layout = Layout("passon")
    rdb, broker = broker_on(redis_server, layout, slots=10)
    wake, queue = layout.mq.wake("p"), layout.mq.queue("p")
    try:
        for i in range(5):
            broker.enqueue(
                Message(queue_name="p", actor_name="a", args=(i,), kwargs={}, options={})
            )
        rdb.delete(wake)  # the enqueue's own token, taken by the consumer that fetches now
        fetched = broker.do_fetch("p", 2)
        assert [Message.decode(m).args for m in fetched] == [(0,), (1,)]  # in order, one LPOP
        assert rdb.llen(wake) == 1 and rdb.llen(queue) == 3
        assert rdb.scard(layout.mq.acks(broker.broker_id, "p")) == 2
        broker.do_fetch("p", 2)
        assert rdb.llen(wake) == 1, "one token waits already: none added"
        rdb.delete(wake)
        assert len(broker.do_fetch("p", 2)) == 1  # the last one
        assert rdb.llen(wake) == 0, "nothing left behind: no token"
        assert broker.do_fetch("p", 2) == []
        assert rdb.llen(wake) == 0
    finally:
        drop_keys(rdb, layout)
        broker.close()
        rdb.close()


def test_a_full_consumer_wakes_on_the_acknowledgements_not_its_poll(
    redis_server: RedisProcess,
) -> None:
    """A consumer whose prefetch is full waits for acknowledgements (a worker thread's), not for
    its poll interval: with a one-minute poll, acknowledging what it holds lets it fetch more."""
    layout = Layout("fullwait")
    rdb, broker = broker_on(redis_server, layout, slots=100)
    dramatiq.Actor(
        lambda *_: None, broker=broker, actor_name="a", queue_name="full", priority=0, options={}
    )
    try:
        for i in range(4):
            broker.enqueue(
                Message(queue_name="full", actor_name="a", args=(i,), kwargs={}, options={})
            )
        consumer = broker.consume("full", prefetch=2, timeout=60_000)
        held = [next(consumer), next(consumer)]
        assert all(m is not None for m in held)
        after: list[object] = []
        waiter = threading.Thread(target=lambda: after.extend([next(consumer), next(consumer)]))
        waiter.start()  # prefetch full: it waits for room
        eventually(lambda: getattr(consumer, "_waiting", False), 20, "the consumer waiting")
        for m in held:
            assert m is not None
            consumer.ack(m)  # as a worker thread does once it processed the message
        waiter.join(20)
        assert not waiter.is_alive(), "still waiting after the acknowledgements"
        # The wait ended (None), then it fetched the next message.
        assert after[0] is None and getattr(after[1], "args", None) == (2,)
    finally:
        drop_keys(rdb, layout)
        broker.close()
        rdb.close()
