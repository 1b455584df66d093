"""Tenants against a real server and worker: tenant A (full and read-only tokens), tenant B (its
token given as a SHA-256 digest) and the default tenant (TASKCAST_AUTH_TOKENS)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis
from pydantic import ValidationError

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import (
    AlreadyExistsError,
    NotFoundError,
    PermissionDeniedError,
    TaskClient,
    TaskHandle,
    TaskSpec,
    TaskState,
)
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings
from taskcast.server.tenants import Caller
from taskcast.worker.store import WorkerStore
from tests.support import command, eventually

pytestmark = pytest.mark.usefixtures("worker")
A, A_READ, B, DEFAULT = "token-acme", "token-acme-read", "token-beta", "token-default"


@pytest.fixture(scope="module")
def server_settings(
    redis_server: RedisProcess, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> ServerSettings:
    """Two tenants in a file, and the default tenant's token from the variable."""
    path = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    path.write_text(
        "[tenants.acme]\n"
        f'tokens = ["{A}"]\n'
        f'read_tokens = ["{A_READ}"]\n'
        "[tenants.beta]\n"
        f'token_sha256 = ["{hashlib.sha256(B.encode()).hexdigest().upper()}"]\n'
    )
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        auth_tokens=DEFAULT,
        tenants_file=str(path),
        http_port=free_port(),
    )


@pytest.fixture(scope="module")
def clients(grpc_addr: str) -> Iterator[dict[str, TaskClient]]:
    """One client per token."""
    made = {t: TaskClient(grpc_addr, token=t) for t in (A, A_READ, B, DEFAULT)}
    yield made
    for c in made.values():
        c.close()


def _not_found(call: Callable[[], Any], task_id: str) -> str:
    """The NOT_FOUND message of `call`, with the id made generic."""
    with pytest.raises(NotFoundError) as caught:
        call()
    return str(caught.value).replace(task_id, "<id>")


@pytest.mark.parametrize(("owner", "other"), [(A, B), (B, A), (A, DEFAULT), (DEFAULT, B)])
def test_another_tenants_task_is_not_found_as_an_unknown_id_is(
    clients: dict[str, TaskClient], owner: str, other: str
) -> None:
    mine, theirs = clients[owner], clients[other]
    task = mine.submit("test.echo", {}, delay=60)  # stays PENDING: cancellable
    unknown = uuid.uuid4().hex
    expected = _not_found(lambda: theirs.get(unknown), unknown)
    assert "not found" in expected
    assert _not_found(lambda: theirs.get(task.id), task.id) == expected
    assert _not_found(lambda: list(theirs.watch(task.id)), task.id) == expected
    assert _not_found(lambda: theirs.cancel(task.id), task.id) == expected
    assert mine.get(task.id).state is TaskState.PENDING  # the refused cancel did nothing
    mine.cancel(task.id)
    assert _not_found(lambda: theirs.retry(task.id), task.id) == expected
    assert mine.get(task.id).state is TaskState.CANCELLED  # nor the refused retry
    assert mine.retry(task.id).state is TaskState.PENDING  # the owner still can, and it runs
    assert [e.state for e in mine.watch(task.id) if e.type == "state"][-1] is TaskState.SUCCEEDED


def test_tasks_and_lists_carry_the_tenant(
    clients: dict[str, TaskClient], rdb: redis.Redis, prefix: str
) -> None:
    mark = uuid.uuid4().hex[:8]
    made = {
        t: clients[t].submit("test.echo", {}, labels={"mark": mark}).id for t in (A, B, DEFAULT)
    }
    names = {A: "acme", B: "beta", DEFAULT: "default"}
    for token, task_id in made.items():
        assert clients[token].get(task_id).tenant == names[token]
        assert [t.tenant for t in clients[token].list(labels={"mark": mark})] == [names[token]]
    # The default tenant's tasks and keys are as before tenants (no field, no tenant segment):
    # data written before tenants reads as the default tenant's, with no migration.
    layout = Layout(prefix)
    assert rdb.hget(layout.task(made[DEFAULT]), "tenant") is None
    assert rdb.hget(layout.task(made[A]), "tenant") == b"acme"
    assert rdb.zscore(layout.index_all(), made[DEFAULT]) is not None
    assert rdb.zscore(layout.index_all(), made[A]) is None
    assert rdb.zscore(layout.of("acme").index_all(), made[A]) is not None
    assert rdb.smembers(layout.tenants()) == {b"acme", b"beta"}


def test_lists_show_only_ones_own_tasks_with_every_filter(
    clients: dict[str, TaskClient],
) -> None:
    mark = uuid.uuid4().hex[:8]
    own: dict[str, set[str]] = {A: set(), B: set()}
    for token, n in ((A, 3), (B, 2)):
        for _ in range(n):
            own[token].add(clients[token].submit("test.echo", {}, labels={"mark": mark}).id)
    for token in (A, B):
        c = clients[token]
        for t in own[token]:
            c.wait(t, timeout=20)
        everything = {t.id for t in c.list(page_size=1000)}
        assert own[token] <= everything
        others = own[B if token == A else A]
        assert not others & everything
        filtered = [
            {t.id for t in c.list(labels={"mark": mark})},
            {t.id for t in c.list(kind="test.echo", labels={"mark": mark})},
            {t.id for t in c.list(state="SUCCEEDED", labels={"mark": mark})},
        ]
        assert filtered == [own[token]] * 3
        by_kind = {t.id for t in c.list(kind="test.echo", page_size=1000)}
        by_state = {t.id for t in c.list(state="SUCCEEDED", page_size=1000)}
        assert own[token] <= by_kind and own[token] <= by_state
        assert not others & (by_kind | by_state)
    # the read-only token of A lists A's tasks
    assert {t.id for t in clients[A_READ].list(labels={"mark": mark})} == own[A]


def test_stats_count_only_ones_own_tasks(clients: dict[str, TaskClient]) -> None:
    handles = [clients[A].submit("test.async_echo", {}) for _ in range(3)]
    handles.append(clients[B].submit("test.async_echo", {}))
    for h in handles:
        h.wait(timeout=20)
    for token, tenant in ((A, "acme"), (B, "beta"), (A_READ, "acme"), (DEFAULT, "default")):
        c = clients[token]
        stats = c.stats()
        assert stats.tenant == tenant
        kinds = {k.kind: k for k in stats.kinds}
        # every task counts in exactly one state, so the counts sum to the tenant's tasks
        listed = list(c.list(kind="test.async_echo", page_size=1000))
        assert sum(kinds["test.async_echo"].counts.values()) == len(listed)
        succeeded = sum(1 for t in listed if t.state is TaskState.SUCCEEDED)
        assert kinds["test.async_echo"].run_time_samples == succeeded
        assert {q.name for q in stats.queues} >= {"default"}  # shared: every tenant sees them
    assert len(list(clients[A].list(kind="test.async_echo"))) == 3
    assert len(list(clients[B].list(kind="test.async_echo"))) == 1
    assert len(list(clients[DEFAULT].list(kind="test.async_echo"))) == 0


def test_idempotency_keys_are_per_tenant(clients: dict[str, TaskClient]) -> None:
    key = f"order-{uuid.uuid4().hex[:8]}"
    a = clients[A].submit("test.echo", {"who": "a"}, idempotency_key=key, delay=60)
    b = clients[B].submit("test.echo", {"who": "b"}, idempotency_key=key, delay=60)
    assert a.id != b.id  # two tasks, no ALREADY_EXISTS
    assert clients[A].submit("test.echo", {"who": "a"}, idempotency_key=key, delay=60).id == a.id
    assert clients[B].submit("test.echo", {"who": "b"}, idempotency_key=key, delay=60).id == b.id
    with pytest.raises(AlreadyExistsError) as caught:
        clients[A].submit("test.echo", {"who": "b"}, idempotency_key=key, delay=60)
    assert b.id not in str(caught.value)  # only one's own task is ever named
    a.cancel()
    b.cancel()


def test_a_read_only_token_reads_its_tenant_and_writes_nothing(
    clients: dict[str, TaskClient],
) -> None:
    reader = clients[A_READ]
    done = clients[A].submit("test.echo", {"x": 1})
    waiting = clients[A].submit("test.echo", {}, delay=60)
    beta = clients[B].submit("test.echo", {}, delay=60)
    assert reader.wait(done.id, timeout=20)["payload"] == {"x": 1}
    assert reader.get(waiting.id).tenant == "acme"
    assert [e.type for e in reader.watch(done.id)][-1] == "state"
    with pytest.raises(NotFoundError):
        reader.get(beta.id)
    for write in (
        lambda: reader.submit("test.echo", {}),
        lambda: reader.cancel(waiting.id),
        lambda: reader.retry(done.id),
    ):
        with pytest.raises(PermissionDeniedError, match="may only read"):
            write()
    assert clients[A].get(waiting.id).state is TaskState.PENDING
    waiting.cancel()
    beta.cancel()


def test_submit_tasks_idempotency_keys_and_indexes_are_per_tenant(
    clients: dict[str, TaskClient], rdb: redis.Redis, prefix: str
) -> None:
    key, mark = f"batch-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    labels = {"mark": mark}

    def batch(token: str, who: str) -> TaskHandle | Exception:
        spec = TaskSpec("test.echo", {"who": who}, labels=labels, idempotency_key=key, delay=60)
        [result] = clients[token].submit_many([spec])
        return result

    a, b = batch(A, "a"), batch(B, "b")
    assert isinstance(a, TaskHandle) and isinstance(b, TaskHandle)
    assert a.id != b.id  # two tasks, no ALREADY_EXISTS across tenants
    assert a.task is not None and a.task.tenant == "acme"
    again = batch(A, "a")
    assert isinstance(again, TaskHandle) and again.id == a.id  # a repeat within the tenant
    # the same key as a single submit finds the batch's task: one key space per tenant
    assert clients[B].submit("test.echo", {"who": "b"}, labels=labels, idempotency_key=key,
                             delay=60).id == b.id  # fmt: skip
    conflict = batch(A, "b")
    assert isinstance(conflict, AlreadyExistsError)
    assert b.id not in str(conflict)  # only one's own task is ever named
    assert [t.id for t in clients[A].list(labels=labels)] == [a.id]
    assert [t.id for t in clients[B].list(labels=labels)] == [b.id]
    assert rdb.hget(Layout(prefix).task(b.id), "tenant") == b"beta"
    a.cancel()
    b.cancel()


def test_a_group_watch_shows_only_its_tenants_tasks_of_the_label(
    clients: dict[str, TaskClient],
) -> None:
    label = {"x": uuid.uuid4().hex[:8]}
    # B's tasks with the same label: one finished before the watch, one pending during it
    b_done = clients[B].submit("test.echo", {}, labels=label)
    b_done.wait(timeout=20)
    b_waiting = clients[B].submit("test.echo", {}, labels=label, delay=60)
    a_task = clients[A].submit("test.echo", {}, labels=label)
    for token in (A, A_READ):  # a read-only token may watch its tenant's groups
        with clients[token].watch_group(f"x={label['x']}", end_when_done=True) as stream:
            events = list(stream)
        assert {e.task_id for e in events} == {a_task.id}
        assert events[-1].state is TaskState.SUCCEEDED
    # and B's group is B's: its finished task replays, A's task never appears
    with clients[B].watch_group(f"x={label['x']}") as stream:
        seen = {next(stream).task_id for _ in range(3)}  # PENDING, RUNNING, SUCCEEDED of b_done
    assert seen == {b_done.id}
    b_waiting.cancel()


def _failed(client: TaskClient, label: dict[str, str], n: int) -> list[str]:
    """`n` demo.fail tasks with `label` that FAILED on attempt 1 (they succeed on attempt 2)."""
    ids = [
        client.submit("demo.fail", {"times": 1}, max_attempts=1, labels=label).id for _ in range(n)
    ]
    eventually(lambda: all(client.get(i).state is TaskState.FAILED for i in ids), 30, f"{n} failed")
    return ids


def test_a_redrive_selects_and_retries_only_its_tenants_tasks(
    clients: dict[str, TaskClient], rdb: redis.Redis, prefix: str
) -> None:
    label = {"batch": uuid.uuid4().hex[:8]}
    b_ids = _failed(clients[B], label, 2)
    a_ids = _failed(clients[A], label, 3)
    dry = clients[A].redrive(labels=label, dry_run=True, sample_size=100)
    # B's failed tasks are not counted (tasks created in the same ms come in id order)
    assert (dry.count, sorted(dry.sample_task_ids)) == (3, sorted(a_ids))
    assert clients[A].redrive(dry_run=True, sample_size=100).count >= 3
    assert not set(b_ids) & set(clients[A].redrive(dry_run=True, sample_size=100).sample_task_ids)

    request_id = uuid.uuid4().hex
    started = clients[A].redrive(labels=label, max_per_second=100, request_id=request_id)
    assert started.count == 3 and started.operation is not None
    op = started.operation
    assert op.tenant == "acme"
    assert clients[A].wait(op.id, timeout=60) == {"retried": 3, "skipped": 0, "total": 3}
    # The operation ends once each task is queued again; each then runs (and succeeds) on its own.
    eventually(
        lambda: all(clients[A].get(i).state is TaskState.SUCCEEDED for i in a_ids),
        30,
        "A's redriven tasks succeeded",
    )
    # B's tasks: still FAILED, never retried (no retry event), and A's operation is not B's
    layout = Layout(prefix)
    for task_id in b_ids:
        assert clients[B].get(task_id).state is TaskState.FAILED
        events = cast("list[tuple[bytes, dict[bytes, bytes]]]", rdb.xrange(layout.events(task_id)))
        assert not [f for _, f in events if f.get(b"reason") == b"retry"]
    with pytest.raises(NotFoundError):
        clients[B].get(op.id)
    assert op.id not in {t.id for t in clients[B].list(kind="taskcast.redrive", page_size=1000)}
    # request ids are per tenant, like idempotency keys: B's same id starts B's own operation
    b_started = clients[B].redrive(labels=label, max_per_second=100, request_id=request_id)
    assert b_started.created and b_started.operation is not None
    assert b_started.operation.id != op.id and b_started.count == 2
    assert clients[B].wait(b_started.operation.id, timeout=60)["retried"] == 2


def test_a_read_only_token_cannot_submit_tasks_or_redrive(
    clients: dict[str, TaskClient],
) -> None:
    reader = clients[A_READ]
    label = {"mark": uuid.uuid4().hex[:8]}
    results = reader.submit_many([TaskSpec("test.echo", {}, labels=label)] * 2)
    assert [type(r) for r in results] == [PermissionDeniedError] * 2
    assert "may only read" in str(results[0])
    for redrive in (
        lambda: reader.redrive(labels=label, dry_run=True),
        lambda: reader.redrive(labels=label, max_per_second=10),
    ):
        with pytest.raises(PermissionDeniedError, match="may only read"):
            redrive()
    assert not list(clients[A].list(labels=label))  # nothing was submitted


def test_a_tenants_compacted_task_is_still_its_own(
    clients: dict[str, TaskClient], rdb: redis.Redis, prefix: str
) -> None:
    layout = Layout(prefix)
    handle = clients[A].submit("test.chatty", {"n": 3})
    assert handle.wait(timeout=20) == 3
    before = handle.get()
    # What the pruner runs (compact.lua, by id and global), with no window: the module's worker
    # holds the sweep lock for most of its default interval, so a second worker would wait.
    assert WorkerStore(rdb, layout, threading.Event()).compact(0) >= 1
    assert not rdb.exists(layout.events(handle.id))
    assert rdb.hexists(layout.task(handle.id), "tail")
    assert rdb.hget(layout.task(handle.id), "tenant") == b"acme"  # compaction keeps the owner
    assert clients[A].get(handle.id) == before
    with clients[A].watch(handle.id) as events:
        assert [e.type for e in events] == ["events_trimmed", "state"]
    assert _not_found(lambda: clients[B].get(handle.id), handle.id) == _not_found(
        lambda: clients[B].get("0" * 32), "0" * 32
    )
    with pytest.raises(NotFoundError):
        list(clients[B].watch(handle.id))


BAD_FILES = [
    ("tenants = [", "not valid TOML"),
    ("[other]\nx = 1\n", "expected only [tenants.<name>] tables"),
    ('[tenants.Acme]\ntokens = ["t1"]\n', "[tenants.Acme]: a tenant name is"),
    ('[tenants."-x"]\ntokens = ["t1"]\n', "[tenants.-x]: a tenant name is"),
    ("[tenants.acme]\ntokens = 5\n", "[tenants.acme] tokens: expected a list"),
    ('[tenants.acme]\ntokens = [""]\n', "[tenants.acme] tokens: expected a list"),
    ('[tenants.acme]\nsecrets = ["t1"]\n', "[tenants.acme]: give one or more of tokens"),
    ('[tenants.acme]\ntoken_sha256 = ["abc"]\n', "[tenants.acme] token_sha256: a SHA-256"),
    (
        '[tenants.acme]\ntokens = ["t1"]\n[tenants.beta]\nread_tokens = ["t1"]\n',
        "[tenants.beta] read_tokens: a token is also given in tenants file",
    ),
    (
        f'[tenants.acme]\ntokens = ["t1"]\ntoken_sha256 = ["{hashlib.sha256(b"t1").hexdigest()}"]',
        "[tenants.acme] token_sha256: a token is also given in",
    ),
    ('[tenants.acme]\ntokens = ["env-token"]\n', "also given in TASKCAST_AUTH_TOKENS"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_FILES)
def test_a_bad_tenants_file_fails_start_up_naming_the_file_and_entry(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    with pytest.raises(ValidationError, match=re.escape(f"tenants file {path}")) as caught:
        ServerSettings(auth_tokens="env-token", tenants_file=str(path))
    assert problem in str(caught.value)


def test_a_missing_tenants_file_fails_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read it"):
        ServerSettings(tenants_file=str(tmp_path / "none.toml"))


def _cli(*args: str, server: str, token: str) -> subprocess.CompletedProcess[str]:
    return command(*args, env={"TASKCAST_SERVER": server, "TASKCAST_TOKEN": token})


def test_the_command_acts_for_the_tenant_of_its_token(grpc_addr: str) -> None:
    submitted = _cli("submit", "test.echo", "--json", "{}", server=grpc_addr, token=A)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    shown = _cli("get", task_id, server=grpc_addr, token=A_READ)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["tenant"] == "acme"
    refused = _cli("get", task_id, server=grpc_addr, token=B)
    assert refused.returncode != 0 and "not found" in refused.stderr
    stats = _cli("stats", server=grpc_addr, token=B)
    assert stats.returncode == 0, stats.stderr
    assert "tenant: beta" in stats.stdout
    as_json = _cli("stats", "-o", "json", server=grpc_addr, token=A)
    assert json.loads(as_json.stdout)["tenant"] == "acme"


def test_a_default_table_adds_to_the_default_tenants_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.default]\nread_tokens = ["d-read"]\n[tenants.acme]\ntokens = ["a"]\n')
    tokens = ServerSettings(auth_tokens="d-full", tenants_file=str(path)).tokens()
    assert tokens.resolve("d-full") == Caller("default", True)
    assert tokens.resolve("d-read") == Caller("default", False)
    assert tokens.resolve("a") == Caller("acme", True)
    assert tokens.resolve("d-full ") is None  # a token is matched exactly


async def test_a_tenants_watch_token_opens_its_task_on_the_gateway(
    clients: dict[str, TaskClient], base: str, http: aiohttp.ClientSession
) -> None:
    """The token carries its tenant: it opens the tenant's task; another tenant can neither
    read that task on the gateway nor mint a token for it."""
    handle = clients[A].submit("test.echo", {"n": 1})
    handle.wait(timeout=20)
    token = clients[A].watch_token(handle.id)
    async with http.get(f"{base}/{handle.id}", params={"token": token}) as reply:
        assert reply.status == 200
        assert (await reply.json())["tenant"] == "acme"
    async with http.get(f"{base}/{handle.id}/events", params={"token": token}) as reply:
        assert reply.status == 200
        assert "event: end" in await reply.text()
    headers = {"Authorization": f"Bearer {B}"}
    async with http.get(f"{base}/{handle.id}", headers=headers) as reply:
        assert reply.status == 404
    with pytest.raises(NotFoundError):
        clients[B].watch_token(handle.id)
