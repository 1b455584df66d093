"""`WorkerStore.run` keeps one connection per thread and recovers from losing it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.core import calls
from taskcast.core.layout import Layout
from taskcast.worker.store import WorkerStore
from tests.support import eventually


@pytest.fixture
def named() -> str:
    return f"held-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_server: RedisProcess, named: str) -> Iterator[WorkerStore]:
    client = redis.Redis.from_url(redis_server.url, client_name=named)
    store = WorkerStore(client, Layout(f"t{uuid.uuid4().hex[:8]}"), threading.Event())
    # Loaded beforehand, so that redis-py's pool opens no connection to load it on first use.
    with redis.Redis.from_url(redis_server.url) as loader:
        loader.script_load(store._scripts["renew"].script)
    yield store
    client.close()


def _renew(store: WorkerStore) -> int:
    """A script call with a known answer: no lease of these ids exists."""
    return calls.renew_reply(store.run(calls.renew(store.layout, 1000, ["a", "b"])))


def _ids(rdb: redis.Redis, name: str) -> list[str]:
    return [c["id"] for c in rdb.client_list() if c["name"] == name]


def test_a_thread_keeps_one_connection(store: WorkerStore, rdb: redis.Redis, named: str) -> None:
    assert [_renew(store) for _ in range(10)] == [0] * 10
    assert len(_ids(rdb, named)) == 1
    other = threading.Thread(target=_renew, args=(store,))
    other.start()
    other.join()
    assert len(_ids(rdb, named)) == 2  # each thread keeps its own


def test_closing_the_client_closes_every_threads_connection(
    store: WorkerStore, rdb: redis.Redis, named: str
) -> None:
    other = threading.Thread(target=_renew, args=(store,))
    other.start()
    other.join()  # ended, its connection still the pool's
    assert _renew(store) == 0
    assert len(_ids(rdb, named)) == 2
    store.client.close()
    eventually(lambda: _ids(rdb, named) == [], what="Redis to see both connections closed")


def test_a_killed_connection_fails_once_then_a_new_one_is_used(
    store: WorkerStore, rdb: redis.Redis, named: str
) -> None:
    assert _renew(store) == 0
    (held,) = _ids(rdb, named)
    rdb.client_kill_filter(_id=held)
    with pytest.raises(redis.ConnectionError):  # `persist` retries this (it may have run)
        _renew(store)
    assert _renew(store) == 0
    assert _ids(rdb, named) not in ([], [held])


def test_scripts_flushed_from_redis_are_loaded_again(store: WorkerStore, rdb: redis.Redis) -> None:
    assert _renew(store) == 0
    rdb.script_flush()
    assert _renew(store) == 0


def test_an_error_reply_leaves_the_connection_usable(
    store: WorkerStore, rdb: redis.Redis, named: str
) -> None:
    assert _renew(store) == 0
    (held,) = _ids(rdb, named)
    bad = calls.renew(store.layout, 1000, ["a"])
    bad.args[len(store.layout.common_args())] = "not a number"  # the script's own error
    with pytest.raises(redis.ResponseError):
        store.run(bad)
    assert _renew(store) == 0
    assert _ids(rdb, named) == [held]
