"""Prometheus metrics by tenant: a server with two tenants and a worker, both scraped over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskSpec
from taskcast.server.config import ServerSettings
from tests.integration.test_metrics import scrape, value
from tests.support import WorkerProcess, eventually, settings_for, tenants_file

A, B = "token-acme", "token-beta"
SERVER_PORT, WORKER_PORT = free_port(), free_port()


@pytest.fixture(scope="module")
def server_settings(
    redis_server: RedisProcess, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> ServerSettings:
    """Tenants acme and beta, and /metrics on a free port."""
    path = tenants_file(tmp_path_factory.mktemp("tenants"), {"acme": A, "beta": B})
    return settings_for(redis_server, prefix, tenants_file=path, metrics_port=SERVER_PORT)


@pytest.fixture(scope="module")
def clients(grpc_addr: str) -> Iterator[dict[str, TaskClient]]:
    """One client per tenant."""
    made = {t: TaskClient(grpc_addr, token=t) for t in (A, B)}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """One worker process serving its metrics."""
    proc = WorkerProcess(
        redis_server.url, prefix, extra_env={"TASKCAST_METRICS_PORT": str(WORKER_PORT)}
    ).start()
    yield proc
    proc.stop()


def test_submits_attempts_and_limit_waits_are_counted_per_tenant(
    clients: dict[str, TaskClient], worker: WorkerProcess
) -> None:
    acme, beta = clients[A], clients[B]
    submitted = "taskcast_tasks_submitted_total"
    echo = {"kind": "test.echo", "queue": "default"}
    # The server's counters are the test process's (other modules' servers count too): deltas.
    before = scrape(SERVER_PORT)
    for h in [acme.submit("test.echo", {}) for _ in range(3)]:
        h.wait(timeout=30)
    beta.submit_many([TaskSpec("test.echo", {"i": i}) for i in range(2)])
    account = uuid.uuid4().hex
    # 95 of 100 tokens used: beta's next task under the same key waits for the budget.
    acme.submit("test.tokens", {"account": account, "use": 95}).wait(timeout=30)
    beta.submit("test.tokens", {"account": account}).wait(timeout=30)

    after = scrape(SERVER_PORT)

    def added(tenant: str) -> float:
        return value(after, submitted, **echo, tenant=tenant) - value(
            before, submitted, **echo, tenant=tenant
        )

    assert (added("acme"), added("beta"), added("default")) == (3, 2, 0)

    def counted() -> bool:  # the module's own worker process: its counters start at 0
        s = scrape(WORKER_PORT)
        ok = "taskcast_attempts_total", {"kind": "test.echo", "outcome": "succeeded"}
        waits = "taskcast_limit_waits_total", {"kind": "test.tokens", "reason": "tokens"}
        return (
            value(s, ok[0], **ok[1], tenant="acme") == 3
            and value(s, ok[0], **ok[1], tenant="beta") == 2
            and value(s, waits[0], **waits[1], tenant="beta") == 1
            and value(s, waits[0], **waits[1], tenant="acme") == 0
        )

    eventually(counted, 30, "the worker's counters by tenant")
