"""Finished tasks expire after the retention; listings forget them too."""

from __future__ import annotations

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import NotFoundError, TaskClient
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from tests.support import await_pruned, eventually, expired


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """A one-second retention (the workers, who finish tasks, get the same)."""
    return ServerSettings(
        redis_url=redis_server.url, redis_prefix=prefix, listen="127.0.0.1:0", retention=1
    )


@pytest.mark.usefixtures("short_lived_worker")
def test_finished_task_expires_with_its_events(
    client: TaskClient, rdb: object, prefix: str
) -> None:
    handle = client.submit("test.echo", {}, labels={"keep": "no"})
    handle.wait(timeout=20)
    running = client.submit("test.echo", {}, delay=60)  # not finished: never expires

    eventually(lambda: expired(handle.get), timeout=20, what="the finished task to expire")
    layout = Layout(prefix)
    assert not rdb.exists(layout.events(handle.id))  # type: ignore[attr-defined]
    # The workers sweep the expired task out of every index, listed or not.
    await_pruned(rdb, layout, handle.id, "keep=no")  # type: ignore[arg-type]
    assert [t.id for t in client.list(labels={"keep": "no"})] == []
    with pytest.raises(NotFoundError):
        list(handle.watch())
    assert running.get().state.value == "PENDING"
    running.cancel()


@pytest.mark.usefixtures("short_lived_worker")
def test_label_and_kind_sets_shrink_when_their_tasks_expire(
    client: TaskClient, rdb: object, prefix: str
) -> None:
    # One label per task, as a caller tagging each task with a request id would.
    layout = Layout(prefix)
    labels, kinds = layout.indexed_labels(), layout.indexed_kinds()
    client.submit("test.async_echo", {}, labels={"req": "r0"})
    # Listed at submit (and only expired a retention after it finished: not yet). Later ones may
    # already be gone once all 200 are in, on a loaded machine: check the first one now.
    assert rdb.sismember(labels, "req=r0")  # type: ignore[attr-defined]
    for i in range(1, 200):
        client.submit("test.async_echo", {}, labels={"req": f"r{i}"})
    # Each prune pass walks every listed label: the set must not keep the expired ones. (A task
    # that never ran would never expire: emptied means all 200 ran, finished and expired.)
    eventually(
        lambda: rdb.scard(labels) == 0,  # type: ignore[attr-defined]
        timeout=60,
        what="labels set emptied",
    )
    eventually(
        lambda: not rdb.sismember(kinds, "test.async_echo"),  # type: ignore[attr-defined]
        what="kind left the kinds set",
    )
    assert not rdb.keys(layout.index_label("*"))  # type: ignore[attr-defined]
