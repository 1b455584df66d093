"""Housekeeping parts are independent: one failing (pruning) never stops another (leases)."""

from __future__ import annotations

import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient, TaskState
from taskcast.core.layout import Layout
from tests.support import WorkerProcess, eventually


def test_lease_renewal_goes_on_while_pruning_fails(
    client: TaskClient, redis_server: RedisProcess, prefix: str
) -> None:
    rdb = redis.Redis.from_url(redis_server.url)
    # A label index entry that is not UTF-8: every pruning pass now fails on it (not a Redis
    # error: a bug's stand-in), over and over, every 0.1 s.
    layout = Layout(prefix)
    rdb.sadd(layout.indexed_labels(), b"\xff\xfe")
    env = {"TASKCAST_PRUNE_INTERVAL": "0.1", "TASKCAST_LEASE": "1"}
    worker = WorkerProcess(redis_server.url, prefix, extra_env=env).start()
    try:
        handle = client.submit("test.async_block", {"seconds": 4})
        eventually(lambda: handle.get().state is TaskState.RUNNING, 20, "running")
        leases = layout.leases()
        first = rdb.zscore(leases, handle.id)
        assert first is not None
        # Renewed again and again (every lease/5 = 0.2 s) while pruning keeps failing.
        eventually(
            lambda: (rdb.zscore(leases, handle.id) or 0) > first + 2000,
            20,
            "the lease renewed for two more seconds",
        )
        assert handle.wait(timeout=20) == "finished"
        assert handle.get().attempt == 1  # never reaped as lost
    finally:
        worker.stop()
        rdb.delete(layout.indexed_labels())
        rdb.close()
