"""What the client returns: plain dataclasses over the protobuf messages (kept as `.raw`)."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from taskcast.v1 import tasks_pb2 as pb

__all__ = [
    "Event",
    "Kind",
    "KindStats",
    "QueueStats",
    "Stats",
    "Task",
    "TaskError",
    "TaskState",
    "WorkerStats",
]


class TaskState(enum.StrEnum):
    """A task's state; see the proto's TaskState for each member."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"  #: recorded and enqueued, not started
    RUNNING = "RUNNING"  #: an attempt is running
    RETRYING = "RETRYING"  #: an attempt failed; the next is scheduled
    SUCCEEDED = "SUCCEEDED"  #: terminal: result available
    FAILED = "FAILED"  #: terminal: see the error
    CANCELLED = "CANCELLED"  #: terminal: cancelled by a caller

    @property
    def terminal(self) -> bool:
        """Whether nothing follows this state."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)

    @classmethod
    def from_pb(cls, value: int) -> TaskState:
        """From the proto enum value."""
        return cls(pb.TaskState.Name(value).removeprefix("TASK_STATE_"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class TaskError:
    """Why an attempt or a task failed."""

    type: str
    message: str
    retryable: bool

    @classmethod
    def from_pb(cls, msg: pb.TaskError) -> TaskError:
        """From the proto message."""
        return cls(msg.type, msg.message, msg.retryable)


def _time(msg: Any, name: str) -> dt.datetime | None:
    return getattr(msg, name).ToDatetime(dt.UTC) if msg.HasField(name) else None


def _seconds(msg: Any, name: str) -> float | None:
    return getattr(msg, name).ToTimedelta().total_seconds() if msg.HasField(name) else None


@dataclass(frozen=True)
class Task:
    """A task as the server knows it now."""

    id: str
    kind: str
    state: TaskState
    queue: str
    payload: dict[str, Any]
    labels: dict[str, str]
    attempt: int
    max_attempts: int
    result: Any
    error: TaskError | None
    progress: float | None
    progress_message: str
    last_sequence: int
    cancel_requested: bool
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    time_to_first_output: float | None  #: seconds from attempt start to its first output
    raw: pb.Task = field(repr=False)

    @classmethod
    def from_pb(cls, t: pb.Task) -> Task:
        """From the proto message; payload and result parsed from JSON."""
        return cls(
            id=t.id,
            kind=t.kind,
            state=TaskState.from_pb(t.state),
            queue=t.queue,
            payload=json.loads(t.payload_json or "{}"),
            labels=dict(t.labels),
            attempt=t.attempt,
            max_attempts=t.max_attempts,
            result=json.loads(t.result_json) if t.result_json else None,
            error=TaskError.from_pb(t.error) if t.HasField("error") else None,
            progress=t.progress.fraction if t.HasField("progress") else None,
            progress_message=t.progress.message,
            last_sequence=t.last_sequence,
            cancel_requested=t.cancel_requested,
            created_at=_time(t, "create_time"),
            started_at=_time(t, "start_time"),
            finished_at=_time(t, "finish_time"),
            time_to_first_output=_seconds(t, "time_to_first_output"),
            raw=t,
        )


@dataclass(frozen=True)
class Event:
    """One event of a task. `type` is one of: state, progress, output, output_reset,
    keep_alive, events_trimmed; the fields that do not apply are empty."""

    task_id: str
    sequence: int
    type: str
    time: dt.datetime | None
    state: TaskState | None = None
    attempt: int = 0
    progress: float | None = None
    message: str = ""
    text: str = ""
    result: Any = None
    error: TaskError | None = None
    next_attempt_at: dt.datetime | None = None
    first_available_sequence: int = 0
    raw: pb.TaskEvent | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        """Whether this event ends the task."""
        return self.state is not None and self.state.terminal

    @classmethod
    def from_pb(cls, e: pb.TaskEvent) -> Event:
        """From the proto message."""
        kind = e.WhichOneof("kind") or ""
        base: dict[str, Any] = {
            "task_id": e.task_id,
            "sequence": e.sequence,
            "time": _time(e, "time"),
            "raw": e,
        }
        if kind == "state_changed":
            s = e.state_changed
            return cls(
                type="state",
                state=TaskState.from_pb(s.state),
                attempt=s.attempt,
                result=json.loads(s.result_json) if s.result_json else None,
                error=TaskError.from_pb(s.error) if s.HasField("error") else None,
                next_attempt_at=_time(s, "next_attempt_time"),
                message=s.reason,
                **base,
            )
        if kind == "progress":
            p = e.progress
            return cls(
                type="progress", progress=p.fraction, message=p.message, attempt=p.attempt, **base
            )
        if kind == "output":
            return cls(type="output", text=e.output.text, attempt=e.output.attempt, **base)
        if kind == "output_reset":
            return cls(type="output_reset", attempt=e.output_reset.attempt, **base)
        if kind == "events_trimmed":
            return cls(
                type="events_trimmed",
                first_available_sequence=e.events_trimmed.first_available_sequence,
                **base,
            )
        return cls(type="keep_alive", **base)


@dataclass(frozen=True)
class Kind:
    """A task kind as workers registered it (ListKinds)."""

    name: str
    queue: str  #: where its tasks go unless `submit` names a queue
    max_attempts: int  #: attempts unless `submit` sets them
    timeout: float  #: seconds one attempt may take unless `submit` sets it
    schema: dict[str, Any] | None  #: the payload's JSON Schema; None: any JSON object
    served: bool  #: a live worker registered it within the last 30 s
    last_seen: dt.datetime | None

    @classmethod
    def from_pb(cls, k: pb.Kind) -> Kind:
        """From the proto message."""
        return cls(
            name=k.name,
            queue=k.queue,
            max_attempts=k.max_attempts,
            timeout=k.timeout.ToTimedelta().total_seconds(),
            schema=json.loads(k.payload_schema_json) if k.payload_schema_json else None,
            served=k.served,
            last_seen=k.last_seen.ToDatetime(dt.UTC) if k.HasField("last_seen") else None,
        )


@dataclass(frozen=True)
class QueueStats:
    """One queue's figures."""

    name: str
    depth: int
    running: int
    delayed: int
    dead: int
    workers: int = 0  #: live worker processes consuming it
    slots: int = 0  #: their async slots, summed
    slots_used: int = 0
    threads: int = 0  #: their threads for sync kinds, summed
    threads_busy: int = 0


@dataclass(frozen=True)
class WorkerStats:
    """One live worker process and its capacity."""

    id: str
    queues: list[str]
    slots: int
    slots_used: int
    threads: int
    threads_busy: int
    last_seen: dt.datetime | None


@dataclass(frozen=True)
class KindStats:
    """One kind's counts by state and run-time percentiles (seconds)."""

    kind: str
    counts: dict[TaskState, int]
    run_time_p50: float | None
    run_time_p90: float | None
    run_time_p99: float | None
    run_time_samples: int


@dataclass(frozen=True)
class Stats:
    """The answer of GetStats."""

    queues: list[QueueStats]
    kinds: list[KindStats]
    workers: list[WorkerStats] = field(default_factory=list)

    @classmethod
    def from_pb(cls, r: pb.GetStatsResponse) -> Stats:
        """From the proto message."""
        states = [s for s in TaskState if s is not TaskState.UNSPECIFIED]
        return cls(
            queues=[
                QueueStats(
                    q.name,
                    q.depth,
                    q.running,
                    q.delayed,
                    q.dead,
                    q.workers,
                    q.slots,
                    q.slots_used,
                    q.threads,
                    q.threads_busy,
                )
                for q in r.queues
            ],
            workers=[
                WorkerStats(
                    w.id,
                    list(w.queues),
                    w.slots,
                    w.slots_used,
                    w.threads,
                    w.threads_busy,
                    w.last_seen.ToDatetime(dt.UTC) if w.HasField("last_seen") else None,
                )
                for w in r.workers
            ],
            kinds=[
                KindStats(
                    k.kind,
                    {s: getattr(k, s.value.lower()) for s in states},
                    _seconds(k, "run_time_p50"),
                    _seconds(k, "run_time_p90"),
                    _seconds(k, "run_time_p99"),
                    k.run_time_samples,
                )
                for k in r.kinds
            ],
        )
