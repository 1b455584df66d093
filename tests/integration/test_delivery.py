"""At-least-once delivery cannot produce a second run or a second terminal state."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from taskcast.client import TaskClient, TaskState
from taskcast.core import mqlayout
from taskcast.core.layout import Layout
from taskcast.core.mqlayout import MQLayout
from tests.support import drop_keys, eventually, new_task

pytestmark = pytest.mark.usefixtures("worker")


def push_duplicate(rdb: redis.Redis, layout: Layout, task_id: str, kind: str, attempt: int) -> str:
    """Enqueue another message for `attempt`, as a redelivery would; returns its Redis id."""
    msg = mqlayout.encode(
        task_id=task_id, kind=kind, queue="default", attempt=attempt, timeout_ms=10_000
    )
    rdb.hset(layout.mq.msgs(msg.queue), msg.redis_id, msg.data)
    rdb.rpush(layout.mq.queue(msg.queue), msg.redis_id)
    return msg.redis_id


def consumed(rdb: redis.Redis, layout: Layout, *redis_ids: str) -> bool:
    """Whether the worker fetched and acknowledged these messages."""
    return not any(rdb.hexists(layout.mq.msgs("default"), r) for r in redis_ids)


def test_duplicate_delivery_after_success_is_skipped(
    client: TaskClient, rdb: Any, prefix: str
) -> None:
    layout = Layout(prefix)
    handle = client.submit("test.echo", {"x": 1})
    handle.wait(timeout=20)
    before = handle.get()
    # the same attempt again, and a forged next one
    ids = [push_duplicate(rdb, layout, handle.id, "test.echo", attempt) for attempt in (1, 2)]
    eventually(lambda: consumed(rdb, layout, *ids), what="duplicates consumed")
    after = handle.get()
    assert after.state is TaskState.SUCCEEDED
    assert after.last_sequence == before.last_sequence
    assert after.attempt == 1
    assert [e.state for e in handle.watch() if e.terminal] == [TaskState.SUCCEEDED]


def test_duplicate_delivery_while_running_is_skipped(
    client: TaskClient, rdb: Any, prefix: str
) -> None:
    layout = Layout(prefix)
    handle = client.submit("test.block", {"seconds": 30})
    watch = handle.watch()
    next(e for e in watch if e.type == "progress")
    dup = push_duplicate(rdb, layout, handle.id, "test.block", 1)
    eventually(lambda: consumed(rdb, layout, dup), what="duplicate consumed")
    assert handle.get().attempt == 1
    handle.cancel()
    rest = list(watch)
    assert [e.state for e in rest if e.type == "state"] == [TaskState.CANCELLED]


def _namespace_state(rdb: redis.Redis, mq: MQLayout) -> dict[str, Any]:
    """Every key of a Dramatiq namespace, by its name in the namespace, with its type.

    A queue comes with the messages it lists, in order, each without its per-enqueue options
    (Redis id; eta: the two clocks differ); its message hash is read through it and must hold
    exactly the messages it lists. Message ids differ between two enqueues, contents must not.
    """
    from dramatiq import Message

    types = {
        cast(bytes, k).decode(): cast(bytes, rdb.type(k)).decode() for k in rdb.keys(mq.queue("*"))
    }
    names = {key: _name(mq, key) for key in types}
    queues = {key for key, name in names.items() if mq.msgs(name) in types}
    hashes = {mq.msgs(names[q]) for q in queues}
    state: dict[str, Any] = {}
    for key, kind in types.items():
        if key in hashes:
            continue
        if key not in queues:
            state[names[key]] = (kind, None)
            continue
        msgs = rdb.hgetall(mq.msgs(names[key]))
        ids = rdb.lrange(key, 0, -1)
        assert sorted(ids) == sorted(msgs)
        decoded = [Message.decode(cast(bytes, msgs[i])).asdict() for i in ids]
        for m in decoded:
            assert isinstance(m["options"].pop("redis_message_id"), str)
            m["options"].pop("eta", None)
        state[names[key]] = (kind, decoded)
    return state


def _name(mq: MQLayout, key: str) -> str:
    """A key's name within its namespace."""
    return key.removeprefix(mq.queue(""))


@pytest.mark.parametrize("delay_ms", [0, 30_000])
async def test_our_enqueue_writes_what_redis_broker_enqueue_writes(
    redis_server: Any, delay_ms: int
) -> None:
    """`enqueue()` in _lib.lua (run by the submit script) leaves Redis as RedisBroker.enqueue
    does for the same message, plus our wake-up token; and RedisBroker fetches what we wrote."""
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    from taskcast.server.store import ServerStore, connect

    ours, theirs = Layout("mq-ours"), Layout("mq-theirs")
    rdb = redis.Redis.from_url(redis_server.url)
    store = ServerStore(connect(redis_server.url), ours)
    new = new_task(kind="a", queue="q", delay_ms=delay_ms)
    broker = RedisBroker(url=redis_server.url, namespace=theirs.namespace, middleware=[])
    try:
        await store.submit("t" * 32, new)
        target = mqlayout.delayed("q") if delay_ms else "q"
        (data,) = rdb.hvals(ours.mq.msgs(target))
        message = Message.decode(cast(bytes, data))
        broker.enqueue(message.copy(queue_name="q"), delay=delay_ms or None)

        mine, dramatiqs = _namespace_state(rdb, ours.mq), _namespace_state(rdb, theirs.mq)
        # Ours alone: the wake-up token. Dramatiq's alone: its heartbeat, on every command.
        assert mine.pop(_name(ours.mq, ours.mq.wake(target))) == ("list", None)
        assert dramatiqs.pop(_name(theirs.mq, theirs.mq.heartbeats())) == ("zset", None)
        assert mine == dramatiqs
        assert list(mine) == [target]

        reader = RedisBroker(url=redis_server.url, namespace=ours.namespace, middleware=[])
        try:
            if not delay_ms:
                (fetched,) = reader.do_fetch("q", 10)
                assert Message.decode(fetched).message_id == "t" * 32
        finally:
            reader.close()
    finally:
        drop_keys(rdb, ours, theirs)
        broker.close()
        rdb.close()
        await store.client.aclose()


async def test_a_keyed_submit_script_run_twice_records_one_task(
    redis_server: Any, prefix: str
) -> None:
    """The same with an idempotency key: the key, not the hash, finds the call's own task."""
    from taskcast.server.store import ServerStore, connect

    layout = Layout(prefix)
    store = ServerStore(connect(redis_server.url), layout)
    new = new_task(idempotency_key="k-run-twice", fingerprint="d" * 64, queue="unserved-keyed")
    try:
        first, created = await store.submit("e" * 32, new)
        again, created_again = await store.submit("e" * 32, new)
        assert created and created_again and again.id == first.id == "e" * 32
        assert await store.client.xlen(layout.events("e" * 32)) == 1  # one PENDING event
        assert await store.client.llen(layout.mq.queue("unserved-keyed")) == 1  # one message
        other, created_other = await store.submit("c" * 32, new)  # a client's retry: new id
        assert not created_other and other.id == "e" * 32
        assert await store.client.exists(layout.task("c" * 32)) == 0
    finally:
        await store.client.aclose()


async def test_a_submit_script_run_twice_records_one_task(redis_server: Any, prefix: str) -> None:
    """What redis-py does when a reply is lost: the same call (same fresh id) runs again."""
    from taskcast.server.store import ServerStore, connect

    layout = Layout(prefix)
    store = ServerStore(connect(redis_server.url), layout)
    new = new_task()
    try:
        first, created = await store.submit("f" * 32, new)
        again, created_again = await store.submit("f" * 32, new)
        assert created and created_again and again.id == first.id
        assert await store.client.xlen(layout.events("f" * 32)) == 1  # one PENDING event
        assert await store.client.llen(layout.mq.queue("unserved")) == 1  # one message
        keys = await store.client.keys(
            layout.idempotency("*")
        )  # no key was given: none points here
        values = await store.client.mget(keys) if keys else []
        assert not [v for v in values if v is not None and cast(bytes, v).startswith(b"f" * 32)]
    finally:
        await store.client.aclose()
