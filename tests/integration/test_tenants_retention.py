"""The pruner sweeps every tenant's indexes, not only the default tenant's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import NotFoundError, TaskClient
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from tests.support import WorkerProcess, eventually

TOKEN = "token-acme"


@pytest.fixture(scope="module")
def server_settings(
    redis_server: RedisProcess, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> ServerSettings:
    """One tenant besides the default one, and a one-second retention."""
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(f'[tenants.acme]\ntokens = ["{TOKEN}"]\n')
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        retention=1,
        tenants_file=str(path),
    )


@pytest.fixture(scope="module")
def short_lived_worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(
        redis_server.url,
        prefix,
        extra_env={"TASKCAST_RETENTION": "1", "TASKCAST_PRUNE_INTERVAL": "0.3"},
    ).start()
    yield proc
    proc.stop()


@pytest.mark.usefixtures("short_lived_worker")
def test_a_tenants_expired_tasks_leave_its_indexes_and_sets(
    grpc_addr: str, rdb: redis.Redis, prefix: str
) -> None:
    with TaskClient(grpc_addr, token=TOKEN) as client:
        handle = client.submit("test.echo", {}, labels={"keep": "no"})
        handle.wait(timeout=20)
        layout = Layout(prefix).of("acme")
        assert rdb.sismember(layout.indexed_labels(), "keep=no")

        def gone() -> bool:
            try:
                handle.get()
            except NotFoundError:
                return True
            return False

        eventually(gone, timeout=20, what="the finished task to expire")
    indexes = (
        layout.index_all(),
        layout.index_kind("test.echo"),
        layout.index_state("SUCCEEDED"),
        layout.index_label("keep=no"),
    )
    for index in indexes:

        def pruned(i: str = index) -> bool:
            return rdb.zscore(i, handle.id) is None

        eventually(pruned, what=f"{index} pruned")
    eventually(lambda: rdb.scard(layout.indexed_labels()) == 0, what="labels set emptied")
    eventually(lambda: rdb.scard(layout.indexed_kinds()) == 0, what="kinds set emptied")
