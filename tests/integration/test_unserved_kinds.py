"""A message of a kind a worker does not serve is handed back, never lost (rolling deploys)."""

from __future__ import annotations

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskState
from taskcast.core import mqlayout
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from tests.support import WorkerGroup, eventually


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server accepts kinds no worker has registered (typos included)."""
    return ServerSettings(
        redis_url=redis_server.url, redis_prefix=prefix, listen="127.0.0.1:0", accept_any_kind=True
    )


def test_old_worker_hands_new_kinds_to_the_new_worker(
    client: TaskClient, workers: WorkerGroup, redis_server: RedisProcess, prefix: str
) -> None:
    workers.start(threads=2)  # the old version: knows no test.newkind
    handles = [client.submit("test.newkind", {"i": i}) for i in range(20)]
    rdb = redis.Redis.from_url(redis_server.url)
    # Only the old worker consumes the queue now: it must hand back every message, not drop it.
    mq = Layout(prefix).mq
    handed = mq.msgs(mqlayout.delayed("default"))
    eventually(lambda: rdb.hlen(handed) > 0, 20, "the old worker handing messages back")
    assert all(h.get().state is TaskState.PENDING for h in handles)
    workers.start(threads=2, modules=("tests.kinds", "tests.newkinds"))  # the new version
    assert [h.wait(timeout=60) for h in handles] == ["new"] * 20
    assert rdb.zcard(mq.dead("default")) == 0  # nothing dead-lettered
    rdb.close()


def test_kind_no_live_worker_serves_fails_saying_so(
    client: TaskClient, workers: WorkerGroup, redis_server: RedisProcess, prefix: str
) -> None:
    env = {"TASKCAST_UNSERVED_KIND_TIMEOUT": "1"}
    workers.start(extra_env=env)
    handle = client.submit("demo.slep", {})  # a typo: no worker anywhere serves it
    events = list(handle.watch(timeout=30))
    end = events[-1]
    assert end.state is TaskState.FAILED and end.error is not None
    assert end.error.type == "KindNotServed" and "demo.slep" in end.error.message
    assert [e.state for e in events if e.type == "state"] == [TaskState.PENDING, TaskState.FAILED]
