"""Every RPC answers bad input with a clear status; no input corrupts stored state."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from taskcast.client import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    TaskClient,
    TaskState,
)
from taskcast.client._errors import from_grpc
from taskcast.core.layout import Layout
from taskcast.v1 import tasks_pb2 as pb

pytestmark = pytest.mark.usefixtures("worker")


def submit_raw(grpc_stub: Any, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub.SubmitTask(pb.SubmitTaskRequest(**fields), timeout=10)
    return info.value


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("not json", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"text"', "must be a JSON object, got str"),
        ('{"x": NaN}', "NaN is not valid JSON"),
        ('{"x": 1', "is not valid JSON"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "is not valid JSON"),  # nesting past recursion
        ('{"big": "' + "x" * (1 << 20) + '"}', "bytes; the limit is 1048576"),
    ],
)
def test_bad_payloads_are_invalid_argument(client: TaskClient, payload: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("test.echo", payload)
    assert info.value.violations[0][0] == "payload_json"
    assert expected in info.value.violations[0][1]


def test_unknown_kind_names_the_known_ones(client: TaskClient) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("no.such.kind", {})
    message = info.value.violations[0][1]
    assert "'no.such.kind' is not served by any worker" in message
    assert "demo.sleep" in message and "test.echo" in message


def test_every_bad_field_is_reported_at_once(grpc_stub: Any) -> None:
    err = submit_raw(
        grpc_stub,
        kind="",
        queue="bad queue!",
        labels={"Bad Key": "v", "ok": "x" * 300},
        max_attempts=1000,
        delay=duration_pb2.Duration(seconds=-5),
        not_before=timestamp_pb2.Timestamp(seconds=1),
        timeout=duration_pb2.Duration(seconds=0, nanos=0),
        idempotency_key="k" * 300,
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = err.details()
    for field in (
        "kind:",
        "queue:",
        "labels['Bad Key']",
        "labels['ok']",
        "max_attempts:",
        "delay:",
        "idempotency_key:",
        "timeout:",
    ):
        assert field in text, field


def test_invalid_argument_carries_bad_request_details(client: TaskClient) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("", {})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.violations == [("kind", "is required, e.g. 'demo.sleep'")]


@pytest.mark.parametrize("rpc", ["get", "cancel", "watch"])
def test_unknown_id_is_not_found_on_every_rpc(client: TaskClient, rpc: str) -> None:
    call = {
        "get": lambda: client.get("0" * 32),
        "cancel": lambda: client.cancel("0" * 32),
        "watch": lambda: list(client.watch("0" * 32)),
    }[rpc]
    with pytest.raises(NotFoundError, match="not found"):
        call()


@pytest.mark.parametrize("rpc", ["GetTask", "CancelTask", "WatchTask"])
def test_missing_id_is_invalid_argument(grpc_stub: Any, rpc: str) -> None:
    request = {
        "GetTask": pb.GetTaskRequest,
        "CancelTask": pb.CancelTaskRequest,
        "WatchTask": pb.WatchTaskRequest,
    }[rpc](task_id="")

    def call() -> None:
        result = getattr(grpc_stub, rpc)(request, timeout=10)
        if rpc == "WatchTask":
            list(result)

    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task_id: is required" in info.value.details()


def test_list_rejects_a_forged_page_token_and_bad_sizes(grpc_stub: Any) -> None:
    for request in (pb.ListTasksRequest(page_token="!!!"), pb.ListTasksRequest(page_size=5000)):
        with pytest.raises(grpc.RpcError) as info:
            grpc_stub.ListTasks(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_after_sequence_is_invalid(grpc_stub: Any, client: TaskClient) -> None:
    task_id = client.submit("test.echo", {}).id
    with pytest.raises(grpc.RpcError) as info:
        list(
            grpc_stub.WatchTask(pb.WatchTaskRequest(task_id=task_id, after_sequence=-1), timeout=10)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_same_idempotency_key_same_request_returns_the_original(client: TaskClient) -> None:
    first = client.submit("test.echo", {"a": 1, "b": 2}, idempotency_key="order-42")
    again = client.submit("test.echo", '{"b": 2, "a": 1}', idempotency_key="order-42")
    assert again.id == first.id
    assert again.task is not None and again.task.raw.idempotency_key == "order-42"
    first.wait(timeout=20)
    assert [t.id for t in client.list(kind="test.echo", limit=1000)].count(first.id) == 1


def test_same_key_different_request_is_already_exists(client: TaskClient) -> None:
    client.submit("test.echo", {"a": 1}, idempotency_key="order-43")
    with pytest.raises(AlreadyExistsError, match="different request"):
        client.submit("test.echo", {"a": 2}, idempotency_key="order-43")


def test_keys_of_taskcasts_own_tasks_are_refused(client: TaskClient) -> None:
    # A redrive's operation is submitted under "taskcast.redrive/<request id>": a caller's task
    # under that key would be answered to a later RedriveTasks as its operation.
    with pytest.raises(InvalidArgumentError, match="idempotency_key: keys starting with"):
        client.submit("test.echo", {}, idempotency_key="taskcast.redrive/r1")
    (item,) = client.submit_many([{"kind": "test.echo", "idempotency_key": "taskcast.x"}])
    assert isinstance(item, InvalidArgumentError)
    assert client.submit("test.echo", {}, idempotency_key="taskcast-x").id  # a '.' makes it ours


def test_created_flag_tells_a_resubmission(grpc_stub: Any) -> None:
    request = pb.SubmitTaskRequest(kind="test.echo", payload_json="{}", idempotency_key="k-created")
    assert grpc_stub.SubmitTask(request, timeout=10).created
    assert not grpc_stub.SubmitTask(request, timeout=10).created


def test_rejected_submissions_store_nothing(client: TaskClient, rdb: Any, prefix: str) -> None:
    before = rdb.zcard(Layout(prefix).index_all())
    for bad in ("[]", "nope"):
        with pytest.raises(InvalidArgumentError):
            client.submit("test.echo", bad)
    assert rdb.zcard(Layout(prefix).index_all()) == before


def test_delay_holds_the_task_back(client: TaskClient) -> None:
    handle = client.submit("test.echo", {}, delay=0.5)
    task = handle.get()
    assert task.state is TaskState.PENDING
    # the delay counts from the record's creation, both by Redis's clock (submit.lua)
    assert task.raw.not_before_time.ToMilliseconds() == task.raw.create_time.ToMilliseconds() + 500
    handle.wait(timeout=20)
    started = handle.get().raw.start_time.ToMilliseconds()
    assert started >= task.raw.not_before_time.ToMilliseconds()


def test_queue_override_must_be_a_served_queue(client: TaskClient) -> None:
    with pytest.raises(InvalidArgumentError, match="'nowhere' is not served by any worker"):
        client.submit("test.echo", {}, queue="nowhere")
    # Any queue some worker consumes will do: the worker there knows every kind it registered.
    handle = client.submit("test.echo", {}, queue="default")
    assert handle.wait(timeout=20)["attempt"] == 1


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {
                "not_before": lambda: timestamp_pb2.Timestamp(
                    seconds=_now() + 60, nanos=1_500_000_000
                )
            },
            "not_before.nanos",
        ),
        (
            {"not_before": lambda: timestamp_pb2.Timestamp(seconds=_now() + 60, nanos=-1)},
            "not_before.nanos",
        ),
        (
            {"not_before": lambda: timestamp_pb2.Timestamp(seconds=253_402_300_800)},  # year 10000
            "not_before.seconds",
        ),
        (
            {"not_before": lambda: timestamp_pb2.Timestamp(seconds=-62_135_596_801)},  # year 0
            "not_before.seconds",
        ),
        ({"delay": lambda: duration_pb2.Duration(seconds=0, nanos=1_000_000_000)}, "delay.nanos"),
        ({"delay": lambda: duration_pb2.Duration(seconds=1, nanos=-1)}, "delay"),
        (
            {"timeout": lambda: duration_pb2.Duration(seconds=60, nanos=2_000_000_000)},
            "timeout.nanos",
        ),
        ({"timeout": lambda: duration_pb2.Duration(seconds=-1, nanos=5)}, "timeout"),
        ({"timeout": lambda: duration_pb2.Duration(seconds=315_576_000_001)}, "timeout.seconds"),
    ],
)
def test_invalid_timestamps_and_durations_are_refused(
    grpc_stub: Any, fields: dict[str, Any], field: str
) -> None:
    err = submit_raw(grpc_stub, kind="test.echo", **{k: make() for k, make in fields.items()})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith(f"{field}: "), err.details()


def test_an_edge_timestamp_and_duration_are_accepted(grpc_stub: Any) -> None:
    reply = grpc_stub.SubmitTask(
        pb.SubmitTaskRequest(
            kind="test.echo",
            not_before=timestamp_pb2.Timestamp(seconds=_now(), nanos=999_999_999),
            timeout=duration_pb2.Duration(seconds=59, nanos=999_999_999),
        ),
        timeout=10,
    )
    assert reply.task.timeout.ToMilliseconds() == 59_999  # toward zero, not rounded or normalised


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    return from_grpc(err).violations


@pytest.mark.parametrize(
    "labels",
    [
        {"K" * 5000: "v"},  # one 5 KB invalid key
        {f"Bad{i}": "v" for i in range(1000)},  # a thousand invalid keys
        {"\u00c9" * 5000 + str(i): "v" for i in range(10)},  # 10 KB of UTF-8 each, 3x encoded
    ],
    ids=["5KB-key", "1000-keys", "non-ascii-keys"],
)
def test_errors_stay_small_enough_to_be_delivered(grpc_stub: Any, labels: dict[str, str]) -> None:
    err = submit_raw(grpc_stub, kind="test.echo", labels=labels)
    # Unbounded, the client saw RESOURCE_EXHAUSTED: "received metadata size exceeds limit".
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details().encode()) <= 1100
    trailers = sum(len(k) + len(v) for k, v in err.trailing_metadata())
    assert trailers < 4096
    violations = _violations(err)
    assert 1 <= len(violations) <= 10
    assert all(len(f) <= 100 and len(d) <= 400 for f, d in violations)
    if len(labels) > len(violations):
        assert err.details().endswith("more")


def test_a_long_label_key_is_echoed_clipped(grpc_stub: Any) -> None:
    err = submit_raw(grpc_stub, kind="test.echo", labels={"K" * 5000: "v"})
    field, _ = _violations(err)[0]
    assert field == "labels['" + "K" * 63 + "\u2026']"


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "test.echo\n"},
        {"kind": "test.echo", "labels": {"team\n": "x"}},
        {"kind": "test.echo", "queue": "default\n"},
    ],
    ids=["kind", "label-key", "queue"],
)
def test_a_trailing_newline_is_refused(grpc_stub: Any, fields: dict[str, Any]) -> None:
    err = submit_raw(grpc_stub, **fields)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be 1-" in err.details() or "key must be" in err.details()


def test_list_refuses_a_trailing_newline_too(grpc_stub: Any) -> None:
    for request in (
        pb.ListTasksRequest(kind="evil\n"),
        pb.ListTasksRequest(labels={"team\n": "x"}),
    ):
        with pytest.raises(grpc.RpcError) as info:
            grpc_stub.ListTasks(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_idempotency_compares_the_effective_request(grpc_stub: Any) -> None:
    key = f"effective-{uuid.uuid4().hex}"
    first = grpc_stub.SubmitTask(
        pb.SubmitTaskRequest(kind="test.echo", idempotency_key=key), timeout=10
    ).task
    explicit = pb.SubmitTaskRequest(
        kind="test.echo",
        idempotency_key=key,
        queue=first.queue,  # the kind's defaults, spelt out
        max_attempts=first.max_attempts,
        timeout=first.timeout,
        delay=duration_pb2.Duration(),  # no delay, said explicitly
    )
    again = grpc_stub.SubmitTask(explicit, timeout=10)
    assert (again.task.id, again.created) == (first.id, False)
    explicit.max_attempts = first.max_attempts + 1
    err = submit_raw(grpc_stub, **{f.name: v for f, v in explicit.ListFields()})
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
