"""Tasks and events as JSON for the HTTP gateway: the Python client's `to_dict` shapes, built
straight from the stored records (no protobuf on the way, so an SSE event costs one dict and one
`json.dumps`).

The shapes are the client's (`taskcast.client.Task.to_dict`, `Event.to_dict`): fields that do not
apply are left out, times are ISO 8601 text in UTC, states by name (`"RUNNING"`), `payload` and
`result` as parsed JSON, `error` as `{"type", "message", "retryable"}`.
tests/server/test_jsonview.py holds the two to the same output for every event type.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from taskcast.core.records import EventRecord, TaskError, TaskRecord
from taskcast.server.watch import Trimmed

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TYPES = {"state": "state", "progress": "progress", "output": "output", "reset": "output_reset"}


def iso(ms: int) -> str:
    """Epoch milliseconds as the client writes a time (`datetime.isoformat()` in UTC)."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).isoformat()


def _error(err: TaskError) -> dict[str, Any]:
    return {"type": err.type, "message": err.message, "retryable": err.retryable}


def task(t: TaskRecord) -> dict[str, Any]:
    """A task as `Task.to_dict()` gives it."""
    out: dict[str, Any] = {"id": t.id, "kind": t.kind, "state": t.state.value, "queue": t.queue}
    payload = json.loads(t.payload or "{}")
    optional: dict[str, Any] = {
        "payload": payload,
        "labels": t.labels,
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
    }
    out.update((k, v) for k, v in optional.items() if v)
    if t.result:
        out["result"] = json.loads(t.result)
    if t.error is not None:
        out["error"] = _error(t.error)
    if t.progress_fraction is not None:
        out["progress"] = t.progress_fraction
    if t.progress_message:
        out["progress_message"] = t.progress_message
    if t.last_sequence:
        out["last_sequence"] = t.last_sequence
    if t.cancel_requested:
        out["cancel_requested"] = True
    for name, ms in (("created_at", t.created), ("started_at", t.started)):
        if ms:
            out[name] = iso(ms)
    if t.finished:
        out["finished_at"] = iso(t.finished)
    if t.time_to_first_output_ms:  # 0 is left out, as the client leaves out every zero
        out["time_to_first_output"] = t.time_to_first_output_ms / 1000
    lim = t.limits
    if lim:
        out["limits"] = {
            "concurrency_key": lim.concurrency_key,
            "concurrency_limit": lim.concurrency_limit,
            "rate_key": lim.rate_key,
            "rate_limit": lim.rate_count,
            "rate_period": lim.rate_period_ms / 1000 if lim.rate_period_ms else None,
        }
    if t.waiting_for:
        out["waiting_for"] = "concurrency" if t.waiting_for.startswith("c:") else "rate"
    out["tenant"] = t.tenant
    out["priority"] = t.scheduling.priority
    if t.scheduling.fairness_key:
        out["fairness_key"] = t.scheduling.fairness_key
    out["fairness_weight"] = t.scheduling.fairness_weight
    return out


def event(e: EventRecord) -> dict[str, Any]:
    """A stored event as `Event.to_dict()` gives it."""
    f = e.fields
    out: dict[str, Any] = {"task_id": e.task_id}
    if e.sequence:
        out["sequence"] = e.sequence
    out["type"] = _TYPES.get(e.type, "keep_alive")
    if f.get("ts", "0") != "0":
        out["time"] = iso(int(f["ts"]))
    kind = e.type
    if kind == "state":
        out["state"] = f["state"]
    attempt = int(f.get("attempt") or 0)
    if attempt:
        out["attempt"] = attempt
    if kind == "progress":
        out["progress"] = float(f.get("fraction", 0))
    message = f.get("reason", "") if kind == "state" else f.get("message", "")
    if message and kind in ("state", "progress"):
        out["message"] = message
    if kind == "output" and f.get("text"):
        out["text"] = f["text"]
    if kind == "state":
        _state_fields(f, out)
    return out


def _state_fields(f: dict[str, str], out: dict[str, Any]) -> None:
    if f.get("result"):
        out["result"] = json.loads(f["result"])
    err = TaskError.from_json(f.get("error", ""))
    if err is not None:
        out["error"] = _error(err)
    if f.get("next"):
        out["next_attempt_at"] = iso(int(f["next"]))


def trimmed(item: Trimmed) -> dict[str, Any]:
    """An EventsTrimmed notice as `Event.to_dict()` gives it."""
    return {
        "task_id": item.task_id,
        "type": "events_trimmed",
        "first_available_sequence": item.first_available,
    }
