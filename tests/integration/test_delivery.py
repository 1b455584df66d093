"""At-least-once delivery cannot produce a second run or a second terminal state."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from taskcast.client import TaskClient, TaskState
from taskcast.core import messages
from taskcast.core.scripts import Layout
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")


def push_duplicate(rdb: redis.Redis, layout: Layout, task_id: str, kind: str, attempt: int) -> str:
    """Enqueue another message for `attempt`, as a redelivery would; returns its Redis id."""
    msg = messages.encode(
        task_id=task_id, kind=kind, queue="default", attempt=attempt, timeout_ms=10_000
    )
    rdb.hset(f"{layout.namespace}:{msg.queue}.msgs", msg.redis_id, msg.data)
    rdb.rpush(f"{layout.namespace}:{msg.queue}", msg.redis_id)
    return msg.redis_id


def consumed(rdb: redis.Redis, layout: Layout, *redis_ids: str) -> bool:
    """Whether the worker fetched and acknowledged these messages."""
    return not any(rdb.hexists(f"{layout.namespace}:default.msgs", r) for r in redis_ids)


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


def test_script_layout_matches_dramatiq_enqueue(rdb: Any, redis_server: Any) -> None:
    """Our scripts write messages exactly where RedisBroker.enqueue does."""
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    layout = Layout("layoutcheck")
    broker = RedisBroker(url=redis_server.url, namespace=layout.namespace, middleware=[])
    sent = broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    ours = messages.encode(task_id="t", kind="a", queue="q", attempt=1, timeout_ms=1)
    ns = layout.namespace
    assert rdb.lrange(f"{ns}:q", 0, -1) == [sent.options["redis_message_id"].encode()]
    assert rdb.hexists(f"{ns}:q.msgs", sent.options["redis_message_id"])
    assert ours.queue == "q"
    fetched = broker.do_fetch("q", 10)
    decoded = Message.decode(fetched[0])
    assert decoded.message_id == sent.message_id
    broker.client.delete(*rdb.keys(f"{ns}:*"))
    broker.close()


async def test_a_submit_script_run_twice_records_one_task(redis_server: Any, prefix: str) -> None:
    """What redis-py does when a reply is lost: the same call (same fresh id) runs again."""
    from taskcast.server.store import NewTask, ServerStore, connect

    layout = Layout(prefix)
    store = ServerStore(connect(redis_server.url), layout)
    new = NewTask(
        kind="test.echo",
        queue="unserved",
        payload="{}",
        labels={},
        max_attempts=1,
        timeout_ms=1000,
        not_before_ms=0,
        idempotency_key="",
        fingerprint="",
    )
    try:
        first, created = await store.submit("f" * 32, new)
        again, created_again = await store.submit("f" * 32, new)
        assert created and created_again and again.id == first.id
        assert await store.client.xlen(layout.events("f" * 32)) == 1  # one PENDING event
        assert await store.client.llen(f"{layout.namespace}:unserved") == 1  # one message
        keys = await store.client.keys(f"{prefix}:idem:*")  # no key was given: none points here
        values = await store.client.mget(keys) if keys else []
        assert not [v for v in values if v.startswith(b"f" * 32)]
    finally:
        await store.client.aclose()
