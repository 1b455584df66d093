"""server/jsonview.py builds the client's `to_dict` shapes from records: held to the same output as
the client's own conversion of the protobuf message, for every event type and task field."""

from __future__ import annotations

import pytest

from taskcast.client import Event, Task
from taskcast.core.records import EventRecord, TaskError, TaskRecord
from taskcast.core.states import State
from taskcast.server import convert, jsonview
from taskcast.server.watch import Trimmed

ERROR = '{"type": "ValueError", "message": "bad", "retryable": true}'
EVENTS = [
    {"type": "state", "ts": "1764586800123", "state": "PENDING"},
    {"type": "state", "ts": "1764586800000", "state": "RUNNING", "attempt": "1"},
    {"type": "state", "ts": "1", "state": "RETRYING", "attempt": "1", "error": ERROR,
     "next": "1764586801500"},
    {"type": "state", "ts": "5", "state": "SUCCEEDED", "attempt": "2", "result": "0"},
    {"type": "state", "ts": "5", "state": "SUCCEEDED", "attempt": "2", "result": '{"a": [1]}'},
    {"type": "state", "ts": "5", "state": "CANCELLED", "reason": "user pressed stop"},
    {"type": "progress", "ts": "7", "fraction": "0", "message": "", "attempt": "1"},
    {"type": "progress", "ts": "7", "fraction": "0.1", "message": "a tenth \u2014 \u00e9"},
    {"type": "output", "ts": "8", "text": "Hel\nlo \"x\"", "attempt": "3"},
    {"type": "output", "ts": "8", "text": ""},
    {"type": "reset", "ts": "9", "attempt": "2"},
]  # fmt: skip


@pytest.mark.parametrize("fields", EVENTS)
def test_events_match_the_clients_to_dict(fields: dict[str, str]) -> None:
    record = EventRecord("t1", 12, fields)
    assert jsonview.event(record) == Event.from_pb(convert.event_to_pb(record)).to_dict()


def test_trimmed_notice_matches_the_clients_to_dict() -> None:
    item = Trimmed("t1", 40)
    assert jsonview.trimmed(item) == Event.from_pb(convert.watch_item_to_pb(item)).to_dict()


def _task(**changes: object) -> TaskRecord:
    fields: dict[str, object] = {
        "id": "t1", "kind": "demo.sleep", "queue": "default", "state": State.PENDING,
        "payload": "{}", "labels": {}, "attempt": 0, "max_attempts": 3, "created": 1764586800123,
        "updated": 1764586800123, "started": 0, "finished": 0, "not_before": 0, "timeout_ms": 1000,
        "result": "", "error": None, "last_sequence": 1, "idempotency_key": "",
        "cancel_requested": False, "progress_fraction": None, "progress_message": "",
        "time_to_first_output_ms": None,
    }  # fmt: skip
    return TaskRecord(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"payload": '{"seconds": 3}', "labels": {"team": "web"}, "state": State.RUNNING,
         "attempt": 1, "started": 1764586800200, "progress_fraction": 0.0,
         "progress_message": "starting", "time_to_first_output_ms": 250,
         "cancel_requested": True},
        {"state": State.SUCCEEDED, "result": "0", "finished": 1764586801000},
        {"state": State.SUCCEEDED, "result": '""', "time_to_first_output_ms": 0},
        {"state": State.FAILED, "error": TaskError("ValueError", "bad", True)},
    ],
)  # fmt: skip
def test_tasks_match_the_clients_to_dict(changes: dict[str, object]) -> None:
    record = _task(**changes)
    assert jsonview.task(record) == Task.from_pb(convert.task_to_pb(record)).to_dict()
