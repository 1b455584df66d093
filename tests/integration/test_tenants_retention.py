"""The pruner sweeps every tenant's indexes, not only the default tenant's."""

from __future__ import annotations

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from tests.support import await_pruned, eventually, expired, settings_for, tenants_file

TOKEN = "token-acme"


@pytest.fixture(scope="module")
def server_settings(
    redis_server: RedisProcess, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> ServerSettings:
    """One tenant besides the default one, and a one-second retention."""
    path = tenants_file(tmp_path_factory.mktemp("tenants"), {"acme": TOKEN})
    return settings_for(redis_server, prefix, retention=1, tenants_file=path)


@pytest.mark.usefixtures("short_lived_worker")
def test_a_tenants_expired_tasks_leave_its_indexes_and_sets(
    grpc_addr: str, rdb: redis.Redis, prefix: str
) -> None:
    with TaskClient(grpc_addr, token=TOKEN) as client:
        handle = client.submit("test.echo", {}, labels={"keep": "no"})
        handle.wait(timeout=20)
        layout = Layout(prefix).of("acme")
        assert rdb.sismember(layout.indexed_labels(), "keep=no")

        eventually(lambda: expired(handle.get), timeout=20, what="the finished task to expire")
    await_pruned(rdb, layout, handle.id, "keep=no")
    eventually(lambda: rdb.scard(layout.indexed_labels()) == 0, what="labels set emptied")
    eventually(lambda: rdb.scard(layout.indexed_kinds()) == 0, what="kinds set emptied")
