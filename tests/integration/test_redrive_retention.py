"""RedriveTasks on a server with a short retention: an operation must end well within it."""

from __future__ import annotations

import uuid

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import InvalidArgumentError, TaskClient
from taskcast.server.config import ServerSettings
from tests.integration.test_redrive import failed_tasks
from tests.support import settings_for

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """A 20-second retention: the operation's snapshot lasts that long."""
    return settings_for(redis_server, prefix, retention=20)


def test_an_operation_slower_than_half_the_retention_is_refused(client: TaskClient) -> None:
    """At 0.5/s, 10 tasks take 20 s: the operation's snapshot would expire, and its time limit
    (the retention) strike, part-way (it failed with TimeLimitExceeded after 3 retries). The call
    says so and names the slowest rate that fits; a rate that fits runs them all."""
    batch = uuid.uuid4().hex
    failed_tasks(client, batch, 10)
    with pytest.raises(InvalidArgumentError) as info:
        client.redrive(labels={"batch": batch}, max_per_second=0.5)
    ((field, description),) = info.value.violations
    assert field == "max_per_second"
    assert "the 10 selected tasks take 20 s" in description
    assert "give at least 1, or narrow the filter" in description
    assert client.redrive(labels={"batch": batch}, dry_run=True).count == 10  # nothing changed
    started = client.redrive(labels={"batch": batch}, max_per_second=5)
    assert started.operation is not None
    assert client.wait(started.operation.id, timeout=60) == {
        "retried": 10,
        "skipped": 0,
        "total": 10,
    }
