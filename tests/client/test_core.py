"""The client core on its own: requests, paging, watch resumes and outcomes, with no I/O."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from taskcast.client import (
    Event,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    RpcError,
    Task,
    TaskCancelledError,
    TaskFailedError,
    UnavailableError,
    _batch,
    _group,
    _requests,
)
from taskcast.client._errors import error_class
from taskcast.v1 import tasks_pb2 as pb


class Broken(grpc.RpcError):  # type: ignore[misc]  # grpc has no type stubs here
    """A failed call as grpc hands it over: a code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, retry_in: float | None = None) -> None:
        self._code = code
        self._metadata: tuple[tuple[str, bytes], ...] = ()
        if retry_in is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromTimedelta(dt.timedelta(seconds=retry_in))
            packed = any_pb2.Any()
            packed.Pack(info)
            status = status_pb2.Status(code=code.value[0], message="later", details=[packed])
            self._metadata = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "broken"

    def trailing_metadata(self) -> Any:
        return self._metadata


def _page(ids: list[str], token: str = "") -> pb.ListTasksResponse:
    return pb.ListTasksResponse(tasks=[pb.Task(id=i) for i in ids], next_page_token=token)


def _drain(pages: _requests.Pages, replies: list[pb.ListTasksResponse]) -> list[list[str]]:
    """The ids each page handed on, feeding `replies` in order to the calls `pages` asks for."""
    out = []
    while (call := pages.next()) is not None:
        out.append([t.id for t in call.decode(replies.pop(0))])
    return out


def test_submit_fills_the_request_and_makes_a_fresh_idempotency_key() -> None:
    call = _requests.submit("demo.sleep", {"seconds": 1}, labels={"a": "b"}, delay=2.5)
    req = call.request
    assert isinstance(req, pb.SubmitTaskRequest) and call.rpc == "SubmitTask"
    assert (req.kind, req.payload_json, dict(req.labels)) == (
        "demo.sleep",
        '{"seconds": 1}',
        {"a": "b"},
    )
    assert req.delay.ToTimedelta() == dt.timedelta(seconds=2.5) and not req.HasField("timeout")
    assert req.idempotency_key.startswith("auto-")
    again = _requests.submit("demo.sleep", {"seconds": 1}).request
    assert isinstance(again, pb.SubmitTaskRequest)
    assert again.idempotency_key != req.idempotency_key


def test_pages_follow_tokens_and_stop_at_the_limit_without_another_call() -> None:
    pages = _requests.Pages(limit=3, page_size=2, state="running")
    first = pages.next()
    assert first is not None and first.rpc == "ListTasks"
    assert isinstance(first.request, pb.ListTasksRequest)
    assert (first.request.page_size, first.request.state) == (2, pb.TASK_STATE_RUNNING)
    assert [t.id for t in first.decode(_page(["a", "b"], "t1"))] == ["a", "b"]
    second = pages.next()
    assert second is not None and isinstance(second.request, pb.ListTasksRequest)
    assert second.request.page_token == "t1"
    assert [t.id for t in second.decode(_page(["c", "d"], "t2"))] == ["c"]
    assert pages.next() is None


def test_pages_end_when_the_server_sends_no_token() -> None:
    replies = [_page(["a"], "t1"), _page([], "t2"), _page(["b"])]
    assert _drain(_requests.Pages(), replies) == [["a"], [], ["b"]]
    assert _drain(_requests.Pages(limit=0), []) == []


def test_watch_hands_on_events_and_resumes_after_the_last_sequence() -> None:
    watch = _requests.Watch("t1", 4, reconnect_for=60)
    assert watch.request() == pb.WatchTaskRequest(task_id="t1", after_sequence=4)
    progress = pb.TaskEvent(task_id="t1", sequence=5, progress=pb.Progress(fraction=0.5))
    event = watch.receive(progress)
    assert event is not None and event.type == "progress"
    assert watch.receive(pb.TaskEvent(task_id="t1")) is None  # a keep-alive, not asked for
    assert watch.request() == pb.WatchTaskRequest(task_id="t1", after_sequence=5)
    seen = _requests.Watch("t1", 0, reconnect_for=60, keep_alives=True)
    kept = seen.receive(pb.TaskEvent(task_id="t1"))
    assert kept is not None and kept.type == "keep_alive"


def test_watch_resumes_after_transient_codes_only() -> None:
    watch = _requests.Watch("t1", 0, reconnect_for=60)
    assert 0 < watch.resume_after(Broken(grpc.StatusCode.UNAVAILABLE), closed=False) <= 2.0
    with pytest.raises(NotFoundError):
        watch.resume_after(Broken(grpc.StatusCode.NOT_FOUND), closed=False)
    with pytest.raises(RpcError) as closed:  # the client's own close() cancels its streams
        watch.resume_after(Broken(grpc.StatusCode.CANCELLED), closed=True)
    assert closed.value.code == grpc.StatusCode.CANCELLED


def test_watch_honours_the_retry_hint_and_gives_up_after_its_budget() -> None:
    watch = _requests.Watch("t1", 0, reconnect_for=60)
    hinted = watch.resume_after(Broken(grpc.StatusCode.RESOURCE_EXHAUSTED, 5), closed=False)
    assert 5.0 <= hinted <= 6.0  # the hint plus up to 20% jitter
    spent = _requests.Watch("t1", 0, reconnect_for=-1)
    with pytest.raises(UnavailableError, match="gave up resuming the watch of t1"):
        spent.resume_after(Broken(grpc.StatusCode.UNAVAILABLE), closed=False)


def test_every_status_code_has_its_own_class_in_the_resume_path_too() -> None:
    codes = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]
    classes = {error_class(c) for c in codes}
    assert len(classes) == len(codes) and RpcError not in classes
    spent = _requests.Watch("t1", 0, reconnect_for=-1)
    # A server at its watcher limit: was UnavailableError("RESOURCE_EXHAUSTED: ...").
    with pytest.raises(ResourceExhaustedError, match="gave up resuming the watch of t1"):
        spent.resume_after(Broken(grpc.StatusCode.RESOURCE_EXHAUSTED, 1), closed=False)


def test_watch_backoff_never_sleeps_past_its_timeout() -> None:
    watch = _requests.Watch("t1", 0, reconnect_for=60, timeout=0)
    assert watch.time_left() == 0.0
    assert watch.resume_after(Broken(grpc.StatusCode.UNAVAILABLE, 5), closed=False) == 0.0
    assert _requests.Watch("t1", 0, reconnect_for=60).time_left() is None


def _task(state: pb.TaskState.ValueType, **fields: Any) -> Task:
    return Task.from_pb(pb.Task(id="t1", state=state, **fields))


def test_outcome_is_the_result_or_the_error_raised() -> None:
    assert _requests.outcome(_task(pb.TASK_STATE_SUCCEEDED, result_json='{"n": 1}')) == {"n": 1}
    with pytest.raises(TaskFailedError):
        _requests.outcome(_task(pb.TASK_STATE_FAILED, error=pb.TaskError(type="E")))
    with pytest.raises(TaskCancelledError):
        _requests.outcome(_task(pb.TASK_STATE_CANCELLED))


def test_event_to_dict_leaves_out_what_does_not_apply_and_keeps_zero_progress() -> None:
    failed = pb.TaskEvent(
        task_id="t1",
        sequence=4,
        state_changed=pb.StateChanged(
            state=pb.TASK_STATE_FAILED, attempt=2, error=pb.TaskError(type="E", message="m")
        ),
    )
    assert Event.from_pb(failed).to_dict() == {
        "task_id": "t1",
        "sequence": 4,
        "type": "state",
        "state": "FAILED",
        "attempt": 2,
        "error": {"type": "E", "message": "m", "retryable": False},
    }
    started = pb.TaskEvent(task_id="t1", sequence=2, progress=pb.Progress(fraction=0.0))
    assert Event.from_pb(started).to_dict()["progress"] == 0.0
    assert Event.from_pb(pb.TaskEvent(task_id="t1")).to_json() == (
        '{"task_id":"t1","type":"keep_alive"}'
    )


def test_an_event_inside_a_pydantic_model_serialises_through_to_dict() -> None:
    import pydantic

    class Reply(pydantic.BaseModel):
        event: Event

    event = Event.from_pb(pb.TaskEvent(task_id="t1", sequence=3, output=pb.Output(text="hi")))
    reply = Reply(event=event)
    assert reply.model_dump(mode="json") == {"event": event.to_dict()}
    assert json.loads(reply.model_dump_json()) == {"event": event.to_dict()}
    assert Reply.model_json_schema()["properties"]["event"]["type"] == "object"


def test_group_watch_keeps_a_cursor_per_task_and_resumes_with_all_of_them() -> None:
    watch = _group.GroupWatch("batch=7", {"a": 2}, True, reconnect_for=60)
    for task_id, seq in (("b", 1), ("a", 3), ("b", 2)):
        assert watch.receive(pb.TaskEvent(task_id=task_id, sequence=seq)) is not None
    assert watch.receive(pb.TaskEvent()) is None  # a keep-alive moves no cursor
    assert watch.request() == pb.WatchTasksRequest(
        label="batch=7",
        cursors=[
            pb.TaskCursor(task_id="a", after_sequence=3),
            pb.TaskCursor(task_id="b", after_sequence=2),
        ],
        end_when_done=True,
    )


def test_batches_are_cut_at_1000_items_and_about_1_mib() -> None:
    calls = list(_batch.calls([{"kind": "k"}] * 2500))
    assert [n for _, n in calls] == [1000, 1000, 500]
    big = _batch.TaskSpec("k", "x" * 400_000)
    assert [n for _, n in _batch.calls([big] * 5)] == [2, 2, 1]
    req = calls[0][0].request
    assert isinstance(req, pb.SubmitTasksRequest)
    keys = {t.idempotency_key for t in req.tasks}
    assert len(keys) == 1000  # each item its own fresh key: a retried call duplicates nothing
    with pytest.raises(TypeError):
        list(_batch.calls([{"kind": "k", "colour": "red"}]))


def test_a_batch_item_error_becomes_its_typed_exception_with_violations() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="kind", description="x")
        ]
    )
    box = any_pb2.Any()
    box.Pack(bad)
    code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    reply = pb.SubmitTasksResponse(
        results=[
            pb.SubmitTasksResult(task=pb.SubmitTaskResponse(task=pb.Task(id="t1"), created=True)),
            pb.SubmitTasksResult(error=status_pb2.Status(code=code, message="m", details=[box])),
        ]
    )
    task, err = _batch.decode(reply)
    assert isinstance(task, Task) and task.id == "t1"
    assert isinstance(err, InvalidArgumentError)
    assert err.violations == [("kind", "x")] and err.message == "m"
