"""What the client returns: plain dataclasses over the protobuf messages (kept as `.raw`)."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias

from taskcast.v1 import tasks_pb2 as pb

__all__ = [
    "Event",
    "EventType",
    "Kind",
    "KindStats",
    "LimitStats",
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
    #: Per-key limits it runs under, as {"concurrency_key", "concurrency_limit", "rate_key",
    #: "rate_limit", "rate_period" (seconds)}; None: none.
    limits: dict[str, Any] | None = None
    #: While a limit holds it back: "concurrency" or "rate"; else "".
    waiting_for: str = ""
    tenant: str = "default"  #: the tenant that submitted it (the token's)
    #: Among ready tasks, 1 starts first, 5 last (see `TaskClient.submit`).
    priority: int = 3
    fairness_key: str = ""  #: shares its tenant's starts with its other keys ("": one key)
    fairness_weight: float = 1.0  #: the key's share against the tenant's other keys

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
            limits=_limits(t.limits) if t.HasField("limits") else None,
            waiting_for=t.waiting.reason if t.HasField("waiting") else "",
            tenant=t.tenant or "default",
            priority=t.scheduling.priority or 3,  # 0: a server from before priorities
            fairness_key=t.scheduling.fairness_key,
            fairness_weight=t.scheduling.fairness_weight or 1.0,
        )

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON types only (no protobuf), as the HTTP gateway serves it.

        Fields that are None, empty, zero or false are left out, except `result` and
        `progress`, kept whenever they are not None (a result may be 0 or ""); times are ISO
        8601 text, `state` its name, `error` a dict of type, message and retryable.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "raw" or value is None:
                continue
            if f.name not in ("result", "progress") and value in ("", {}, 0, False):
                continue
            out[f.name] = _plain(value)
        return out

    def to_json(self) -> str:
        """`to_dict` as compact JSON text on one line."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _limits(lim: pb.TaskLimits) -> dict[str, Any]:
    return {
        "concurrency_key": lim.concurrency_key,
        "concurrency_limit": lim.concurrency_limit,
        "rate_key": lim.rate_key,
        "rate_limit": lim.rate_limit,
        "rate_period": _seconds(lim, "rate_period"),
    }


EventType: TypeAlias = Literal[
    "state",  #: the task changed state (`state`, `attempt`, `result` or `error`, ...)
    "progress",  #: `progress` (0 to 1) and `message`
    "output",  #: a piece of streamed `text`
    "output_reset",  #: the output of `attempt` so far is void (it failed; a retry follows)
    "keep_alive",  #: nothing new; the stream is alive (no sequence)
    "events_trimmed",  #: events before `first_available_sequence` are gone (retention)
    "waiting",  #: a limit holds the task back: `reason`, `key`, `limit` (`period`: rate's)
]
# Fields `to_dict` leaves out when they hold their "does not apply" value; `result` and
# `progress` are kept whenever they are not None (a result may be 0 or "", progress 0.0).
_EMPTY_WHEN: dict[str, object] = {
    "sequence": 0,
    "attempt": 0,
    "message": "",
    "text": "",
    "first_available_sequence": 0,
    "reason": "",
    "key": "",
    "limit": 0,
}


def _plain(value: Any) -> Any:
    """A field's value as JSON types: times as ISO 8601 text, states by name, errors as dicts."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, TaskState):
        return value.value
    if isinstance(value, TaskError):
        return {"type": value.type, "message": value.message, "retryable": value.retryable}
    return value


@dataclass(frozen=True)
class Event:
    """One event of a task (see `EventType` for each type); the fields that do not apply are
    empty. `raw` is the protobuf message, left out of `to_dict`, `to_json` and comparisons."""

    task_id: str
    sequence: int
    type: EventType
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
    reason: str = ""  #: waiting: "concurrency", "rate" or "tokens"
    key: str = ""  #: waiting: the limit's key
    limit: int = 0  #: waiting: the limit (running at once, or starts per `period`)
    period: float | None = None  #: waiting for a rate: its period in seconds
    raw: pb.TaskEvent | None = field(default=None, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Whether this event ends the task."""
        return self.state is not None and self.state.terminal

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON types only (no protobuf), fields that do not apply left out.

        An output token is `{"task_id": ..., "sequence": 7, "type": "output", "time": ...,
        "attempt": 1, "text": "Hel"}`; times are ISO 8601 text, `state` its name, `error` a
        dict of type, message and retryable.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "raw" or value is None or _EMPTY_WHEN.get(f.name) == value:
                continue
            out[f.name] = _plain(value)
        return out

    def to_json(self) -> str:
        """`to_dict` as compact JSON text on one line (for an SSE `data:` line or a log)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """For pydantic models and FastAPI responses: taken as is, serialised by `to_dict`
        (pydantic could not build a schema for the protobuf `raw` field). Imported only when
        pydantic asks, so the client needs no pydantic."""
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(cls.to_dict)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        """An object (the fields of `to_dict`), for OpenAPI documents."""
        return {"type": "object", "title": "Event"}

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
        if kind == "waiting":
            w = e.waiting
            return cls(
                type="waiting",
                reason=w.reason,
                key=w.key,
                limit=w.limit,
                period=_seconds(w, "period"),
                attempt=w.attempt,
                **base,
            )
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
class Redrive:
    """What `redrive` answered: a dry run's count and sample, or the operation it started."""

    count: int  #: tasks selected (at most 100,000, the oldest first)
    truncated: bool  #: more matched than were selected: run the same filter again afterwards
    sample_task_ids: list[str]  #: dry run only: up to `sample_size` selected ids, oldest first
    #: not a dry run: the operation, a task of kind "taskcast.redrive": follow it by its id
    #: (`client.watch(op.id)`, `client.wait(op.id)`, `client.cancel(op.id)`)
    operation: Task | None
    created: bool  #: False when the same request_id had already started this operation

    @classmethod
    def from_pb(cls, r: pb.RedriveTasksResponse) -> Redrive:
        """From the proto message."""
        return cls(
            count=r.count,
            truncated=r.truncated,
            sample_task_ids=list(r.sample_task_ids),
            operation=Task.from_pb(r.operation) if r.HasField("operation") else None,
            created=r.created,
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
class LimitStats:
    """One per-key limit in use."""

    reason: str  #: "concurrency", "rate" or "tokens"
    key: str
    limit: int  #: tokens: per period
    period: float | None  #: rate and tokens: seconds
    #: concurrency: running now; rate: started within the last period; tokens: used (or reserved)
    #: by the attempts started within the last period
    running: int
    waiting: int  #: tasks held back by it now


@dataclass(frozen=True)
class Stats:
    """The answer of GetStats."""

    queues: list[QueueStats]
    kinds: list[KindStats]
    workers: list[WorkerStats] = field(default_factory=list)
    #: WatchTask streams open on the server process that answered (each replica counts its own)
    watch_streams_open: int = 0
    limits: list[LimitStats] = field(default_factory=list)  #: per-key limits in use
    #: the caller's tenant: `kinds` counts its tasks only; queues and workers are shared
    tenant: str = "default"

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
            watch_streams_open=r.watch_streams_open,
            limits=[
                LimitStats(x.reason, x.key, x.limit, _seconds(x, "period"), x.running, x.waiting)
                for x in r.limits
            ],
            tenant=r.tenant or "default",
        )
