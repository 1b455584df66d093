"""SubmitTasks: each item submitted on its own in one call, against a real server and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import (
    AlreadyExistsError,
    AsyncTaskClient,
    InvalidArgumentError,
    RpcError,
    TaskClient,
    TaskHandle,
    TaskSpec,
    TaskState,
)
from taskcast.core.layout import Layout
from taskcast.server.errors import Unavailable
from taskcast.server.store import ServerStore, connect
from taskcast.v1 import tasks_pb2 as pb
from tests.cli.test_commands import run
from tests.support import LoopThread, eventually, new_task

pytestmark = pytest.mark.usefixtures("worker")


def group() -> dict[str, str]:
    return {"batch": uuid.uuid4().hex[:12]}


def finished(client: TaskClient, ids: list[str]) -> list[Any]:
    """The tasks, once every one of them has ended."""

    def check() -> list[Any] | None:
        tasks = [client.get(i) for i in ids]
        return tasks if all(t.state.terminal for t in tasks) else None

    return eventually(check, 30, "every task of the batch to finish")


def test_batch_with_bad_items_creates_exactly_the_good_ones(client: TaskClient) -> None:
    labels = group()
    items: list[Any] = [
        TaskSpec("test.echo", {"n": 0}, labels=labels),
        {"kind": "no.such.kind", "payload": {"n": 1}, "labels": labels},
        {"kind": "test.echo", "payload": {"n": 2}, "labels": labels},
        TaskSpec("demo.sleep", {"seconds": "x", "steps": 0}, labels=labels),  # its schema says no
        TaskSpec("test.echo", "[1, 2]", labels=labels),  # not an object
        TaskSpec("test.echo", {"n": 5}, labels={**labels, "Bad Key": "v"}),
        TaskSpec("test.echo", {"n": 6}, labels=labels, max_attempts=1000),
        TaskSpec("test.echo", {"n": 7}, labels=labels),
    ]
    results = client.submit_many(items)
    assert len(results) == len(items)
    good = [i for i, r in enumerate(results) if isinstance(r, TaskHandle)]
    assert good == [0, 2, 7]
    errors = {i: r for i, r in enumerate(results) if isinstance(r, RpcError)}
    assert all(isinstance(e, InvalidArgumentError) for e in errors.values())
    assert [f for f, _ in errors[1].violations] == ["kind"]
    schema = dict(errors[3].violations)
    assert "must be number, got string" in schema["payload_json.seconds"]
    assert "payload_json.steps" in schema
    assert [f for f, _ in errors[4].violations] == ["payload_json"]
    assert [f for f, _ in errors[5].violations] == ["labels['Bad Key']"]
    assert [f for f, _ in errors[6].violations] == ["max_attempts"]

    handles = [r for r in results if isinstance(r, TaskHandle)]
    assert all(h.task is not None and h.task.state is TaskState.PENDING for h in handles)
    listed = {t.id for t in client.list(labels=labels)}
    assert listed == {h.id for h in handles}
    # the workers ran exactly these, each once
    tasks = finished(client, [h.id for h in handles])
    assert [t.state for t in tasks] == [TaskState.SUCCEEDED] * 3
    assert [t.result["payload"]["n"] for t in tasks] == [0, 2, 7]
    assert [t.attempt for t in tasks] == [1, 1, 1]
    assert [e.type for e in handles[0].watch()][:1] == ["state"]  # its events are stored


def test_repeating_a_whole_batch_creates_nothing_new(client: TaskClient) -> None:
    labels, run_id = group(), uuid.uuid4().hex
    items = [
        TaskSpec("test.echo", {"n": n}, labels=labels, idempotency_key=f"{run_id}-{n}")
        for n in range(5)
    ]
    first = client.submit_many(items)
    again = client.submit_many(items)
    assert all(isinstance(r, TaskHandle) for r in first + again)
    assert [r.id for r in again] == [r.id for r in first]  # type: ignore[union-attr]
    assert len(list(client.list(labels=labels))) == 5
    finished(client, [r.id for r in first])  # type: ignore[union-attr]


def test_same_key_twice_in_one_batch_is_a_repeat_or_its_own_conflict(client: TaskClient) -> None:
    key = uuid.uuid4().hex
    results = client.submit_many(
        [
            TaskSpec("test.echo", {"n": 1}, idempotency_key=key),
            TaskSpec("test.echo", {"n": 1}, idempotency_key=key),  # the same request: a repeat
            TaskSpec("test.echo", {"n": 2}, idempotency_key=key),  # another request: conflict
        ]
    )
    first, repeat, conflict = results
    assert isinstance(first, TaskHandle) and isinstance(repeat, TaskHandle)
    assert repeat.id == first.id
    assert isinstance(conflict, AlreadyExistsError)
    assert first.id in conflict.message
    finished(client, [first.id])


def test_over_1000_items_or_none_is_invalid_for_the_whole_call(grpc_stub: Any) -> None:
    item = pb.SubmitTaskRequest(kind="test.echo", payload_json="{}")
    for tasks in ([item] * 1001, []):
        with pytest.raises(grpc.RpcError) as info:
            grpc_stub.SubmitTasks(pb.SubmitTasksRequest(tasks=tasks), timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "give 1 to 1,000 per call" in info.value.details()


def test_item_errors_travel_as_statuses_in_the_reply(grpc_stub: Any) -> None:
    reply = grpc_stub.SubmitTasks(
        pb.SubmitTasksRequest(
            tasks=[
                pb.SubmitTaskRequest(kind="test.echo", payload_json='{"n": 1}'),
                pb.SubmitTaskRequest(kind="", payload_json="{"),
            ]
        ),
        timeout=10,
    )
    ok, bad = reply.results
    assert ok.WhichOneof("result") == "task" and ok.task.created
    assert bad.WhichOneof("result") == "error"
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "kind" in bad.error.message and "payload_json" in bad.error.message


def test_client_splits_more_than_1000_items_into_calls(client: TaskClient) -> None:
    # Unknown kinds: refused per item, so 1,001 results come back and nothing is queued.
    results = client.submit_many(
        [{"kind": "no.such.kind", "payload": {"i": i}} for i in range(1001)]
    )
    assert len(results) == 1001
    assert all(isinstance(r, InvalidArgumentError) for r in results)


async def test_async_client_submits_a_batch(grpc_addr: str) -> None:
    labels = group()
    async with AsyncTaskClient(grpc_addr) as client:
        results = await client.submit_many(
            [TaskSpec("test.echo", {"n": n}, labels=labels) for n in range(3)]
            + [TaskSpec("no.such.kind")]
        )
        assert [type(r).__name__ for r in results] == ["AsyncTaskHandle"] * 3 + [
            "InvalidArgumentError"
        ]
        done = [await r.wait(timeout=30) for r in results[:3]]  # type: ignore[union-attr]
    assert [d["payload"]["n"] for d in done] == [0, 1, 2]


def test_cli_submits_a_jsonl_file_one_line_per_task(
    grpc_addr: str, client: TaskClient, tmp_path: Path
) -> None:
    labels = group()
    lines = [
        json.dumps({"n": 1}),
        "",
        json.dumps({"payload": {"n": 2}, "labels": {"part": "two"}, "idempotency_key": "own"}),
        "not json",
        json.dumps(
            {"payload": {"n": 4}, "other": 1}
        ),  # not the per-line form: all of it is payload
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    label = f"batch={labels['batch']}"
    out = run("submit", "test.echo", "--jsonl", str(path), "-l", label, server=grpc_addr)
    assert out.returncode == 4, out.stderr  # one line failed
    printed = out.stdout.splitlines()
    assert len(printed) == 4
    assert printed[2].startswith("error: line 4: INVALID_ARGUMENT")
    ids = [printed[0], printed[1], printed[3]]
    assert all(len(i) == 32 for i in ids)
    tasks = finished(client, ids)
    assert [t.result["payload"] for t in tasks] == [
        {"n": 1},
        {"n": 2},
        {"payload": {"n": 4}, "other": 1},
    ]
    assert tasks[1].labels == {**labels, "part": "two"} and tasks[1].raw.idempotency_key == "own"
    assert tasks[0].labels == labels
    as_json = run(
        "submit", "test.echo", "--jsonl", "-", "-o", "json", server=grpc_addr, stdin='{"n": 9}\n['
    )
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows[0]["line"] == 1 and len(rows[0]["id"]) == 32
    assert rows[1]["line"] == 2 and rows[1]["error"]["code"] == "INVALID_ARGUMENT"
    assert rows[1]["error"]["violations"][0]["field"] == "payload_json"
    finished(client, [rows[0]["id"]])


def test_cli_reports_a_line_it_cannot_send_as_that_line_and_sends_the_rest(
    grpc_addr: str, client: TaskClient, tmp_path: Path
) -> None:
    """A per-line field of the wrong JSON type (or past what a request holds) is that line's
    error, not a traceback that sent nothing."""
    integer = "must be an integer (1 to 100; 0: the kind's default)"
    labels = group()
    lines = [
        json.dumps({"payload": {"n": 1}, "max_attempts": "3"}),
        json.dumps({"payload": {"n": 2}}),
        json.dumps({"payload": {"n": 3}, "timeout": 1e309}),  # JSON's way to say infinity
        json.dumps({"payload": {"n": 4}, "labels": {"k": 5}}),
        json.dumps({"payload": {"n": 5}, "idempotency_key": 7, "delay": True}),
        json.dumps({"payload": {"n": 6}, "max_attempts": 2**40}),
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    label = f"batch={labels['batch']}"
    out = run("submit", "test.echo", "--jsonl", str(path), "-l", label, server=grpc_addr)
    assert out.returncode == 4, out.stderr
    assert "Traceback" not in out.stderr
    printed = out.stdout.splitlines()
    assert printed[0] == f"error: line 1: INVALID_ARGUMENT: max_attempts: {integer}"
    assert printed[2] == "error: line 3: INVALID_ARGUMENT: timeout: must be a number of seconds"
    assert printed[3] == "error: line 4: INVALID_ARGUMENT: labels: must be an object of strings"
    assert printed[4] == "error: line 5: INVALID_ARGUMENT: idempotency_key: must be a string"
    assert printed[5].startswith("error: line 6: INVALID_ARGUMENT: max_attempts:")
    (task,) = finished(client, [printed[1]])
    assert task.result["payload"] == {"n": 2}
    as_json = run("submit", "test.echo", "--jsonl", str(path), "-o", "json", server=grpc_addr)
    row = json.loads(as_json.stdout.splitlines()[0])
    assert row["error"]["violations"] == [{"field": "max_attempts", "description": integer}]
    finished(client, [json.loads(as_json.stdout.splitlines()[1])["id"]])


def test_cli_prints_each_thousand_lines_ids_before_it_reads_on(
    grpc_addr: str, client: TaskClient
) -> None:
    """A file is read, submitted and printed 1,000 lines at a time: the first thousand ids come
    out while the rest of the input has not even been written."""
    label = f"batch={group()['batch']}"
    argv = ["submit", "test.echo", "--jsonl", "-", "-l", label]
    with subprocess.Popen(
        [sys.executable, "-m", "taskcast.cli.main", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TASKCAST_SERVER": grpc_addr},
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write("".join(json.dumps({"n": n}) + "\n" for n in range(1000)))
            proc.stdin.flush()
            first = [proc.stdout.readline().strip() for _ in range(1000)]  # stdin still open
            proc.stdin.write(json.dumps({"n": 1000}) + "\n")
            proc.stdin.close()
            rest = proc.stdout.read().split()
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()
    ids = first + rest
    assert len(ids) == 1001 and all(len(i) == 32 for i in ids)
    assert [t.result["payload"]["n"] for t in finished(client, ids[::250])] == [
        0,
        250,
        500,
        750,
        1000,
    ]


def test_cli_names_a_file_it_cannot_read(grpc_addr: str, tmp_path: Path) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe{}\n")
    for flag, path, reason in [
        ("--jsonl", tmp_path / "missing.jsonl", "No such file or directory"),
        ("--jsonl", tmp_path, "Is a directory"),
        ("--jsonl", binary, "can't decode byte 0xff"),
        ("--payload-file", tmp_path / "missing.json", "No such file or directory"),
    ]:
        out = run("submit", "test.echo", flag, str(path), server=grpc_addr)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().startswith(f"cannot read '{path}': ") and reason in out.stderr


def test_a_batch_unconfirmed_by_a_replica_is_unavailable_then_repeats(
    redis_server: RedisProcess, loop_thread: LoopThread
) -> None:
    """The session's Redis has no replica: with `wait_replicas=1` a batch is stored but never
    acknowledged (one WAIT after the pipeline); sent again, every item is a repeat."""
    layout = Layout(f"t{uuid.uuid4().hex[:10]}")
    items = [new_task(idempotency_key=f"k{i}") for i in range(3)]

    async def submit_twice() -> list[Any]:
        client = connect(redis_server.url)
        store = ServerStore(client, layout, wait_replicas=1, wait_timeout_ms=50)
        try:
            with pytest.raises(Unavailable, match="0 of 1 replicas confirmed"):
                await store.submit_many([(uuid.uuid4().hex, n) for n in items])
            store.wait_replicas = 0
            return await store.submit_many([(uuid.uuid4().hex, n) for n in items])
        finally:
            await client.aclose()

    again = loop_thread.run(submit_twice())
    assert [(r[0].idempotency_key, r[1]) for r in again] == [
        ("k0", False),
        ("k1", False),
        ("k2", False),
    ]
