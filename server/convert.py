"""Records to protobuf messages and back, and requests to plain values.

Besides this module only the servicer (its request and response messages), `app` (registering the
generated services), `healthcheck` (the standard health service) and `errors` (google.rpc status
details) touch `_pb2` types; the logic modules (`submit`, `watch`, `stats`, `store`) never do.
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from taskcast.core.calls import LimitFigures
from taskcast.core.capacity import WorkerRecord
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.limits import TaskLimits
from taskcast.core.records import EventRecord, TaskError, TaskRecord
from taskcast.core.states import State
from taskcast.server.errors import InvalidArgument, ServiceError, status_of
from taskcast.server.group import GroupRequest
from taskcast.server.kinds import Kind
from taskcast.server.redrive import RedriveRequest
from taskcast.server.stats import KindFigures, QueueFigures
from taskcast.server.submit import Outcome, SubmitRequest
from taskcast.server.validation import Problems
from taskcast.server.watch import Item, KeepAlive, Trimmed
from taskcast.v1 import tasks_pb2 as pb


def ts(ms: int) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from epoch milliseconds; None for 0 (unset)."""
    if not ms:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


def dur(ms: int | None) -> duration_pb2.Duration | None:
    """A Duration from milliseconds; None for None."""
    if ms is None:
        return None
    out = duration_pb2.Duration()
    out.FromMilliseconds(ms)
    return out


def _pair(message: Message, name: str) -> tuple[int, int] | None:
    """A Timestamp or Duration field as (seconds, nanos); None when unset."""
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    return value.seconds, value.nanos


def submit_from_pb(r: pb.SubmitTaskRequest) -> SubmitRequest:
    """The request as plain values; unset Timestamps and Durations as None."""
    return SubmitRequest(
        kind=r.kind,
        payload_json=r.payload_json,
        queue=r.queue,
        idempotency_key=r.idempotency_key,
        labels=dict(r.labels),
        delay=_pair(r, "delay"),
        not_before=_pair(r, "not_before"),
        max_attempts=r.max_attempts,
        timeout=_pair(r, "timeout"),
        concurrency_key=r.concurrency_key,
        concurrency_limit=r.concurrency_limit,
        priority=r.priority,
        fairness_key=r.fairness_key,
        fairness_weight=r.fairness_weight,
    )


def redrive_from_pb(r: pb.RedriveTasksRequest, p: Problems) -> RedriveRequest:
    """The request as plain values; an unknown or unspecified state becomes None."""
    f = r.filter
    return RedriveRequest(
        states=[state_from_pb(v, p, "filter.states") for v in f.states],
        kind=f.kind,
        labels=dict(f.labels),
        error_type=f.error_type,
        finished_after=_pair(f, "finished_after"),
        finished_before=_pair(f, "finished_before"),
        max_per_second=r.max_per_second,
        dry_run=r.dry_run,
        sample_size=r.sample_size,
        request_id=r.request_id,
    )


def group_from_pb(r: pb.WatchTasksRequest) -> GroupRequest:
    """The request as plain values; a task named twice in the cursors is INVALID_ARGUMENT."""
    cursors = {c.task_id: c.after_sequence for c in r.cursors}
    if len(cursors) < len(r.cursors):
        raise InvalidArgument([("cursors", "name each task at most once")])
    return GroupRequest(label=r.label, cursors=cursors, end_when_done=r.end_when_done)


def submitted_to_pb(outcomes: list[Outcome]) -> pb.SubmitTasksResponse:
    """SubmitTasks' answer: each item's task, or its error as a google.rpc.Status."""
    return pb.SubmitTasksResponse(
        results=[
            pb.SubmitTasksResult(error=status_of(o))
            if isinstance(o, ServiceError)
            else pb.SubmitTasksResult(
                task=pb.SubmitTaskResponse(task=task_to_pb(o[0]), created=o[1])
            )
            for o in outcomes
        ]
    )


def state_to_pb(state: State) -> pb.TaskState.ValueType:
    """`RUNNING` -> `TASK_STATE_RUNNING`."""
    return pb.TaskState.Value(f"TASK_STATE_{state.value}")


def state_from_pb(value: int, p: Problems, field: str = "state") -> State | None:
    """The inverse; None for UNSPECIFIED, and for an unknown value (a problem added to `field`)."""
    if value not in pb.TaskState.values():
        p.add(field, f"unknown state {value}")
        return None
    if value == pb.TASK_STATE_UNSPECIFIED:
        return None
    return State(pb.TaskState.Name(value).removeprefix("TASK_STATE_"))  # type: ignore[arg-type]


def cursor_to_token(cursor: tuple[int, str] | None) -> str:
    """A ListTasks page token from a page cursor (creation time, id); empty at the end."""
    if cursor is None:
        return ""
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode()


def cursor_from_token(token: str, p: Problems) -> tuple[int, str] | None:
    """The inverse; None for no token, and for one this server did not issue (a problem added)."""
    if not token:
        return None
    try:
        score, _, member = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        return int(score), member
    except (ValueError, binascii.Error, UnicodeDecodeError):
        p.add("page_token", "is not a token this server issued; start again without one")
        return None


def error_to_pb(err: TaskError | None) -> pb.TaskError | None:
    """A TaskError message, or None."""
    if err is None:
        return None
    return pb.TaskError(type=err.type, message=err.message, retryable=err.retryable)


def task_to_pb(t: TaskRecord) -> pb.Task:
    """The public view of a stored task."""
    progress = None
    if t.progress_fraction is not None:
        progress = pb.Progress(
            fraction=t.progress_fraction, message=t.progress_message, attempt=t.progress_attempt
        )
    return pb.Task(
        id=t.id,
        kind=t.kind,
        queue=t.queue,
        state=state_to_pb(t.state),
        payload_json=t.payload,
        labels=t.labels,
        attempt=t.attempt,
        max_attempts=t.max_attempts,
        create_time=ts(t.created),
        update_time=ts(t.updated),
        start_time=ts(t.started),
        finish_time=ts(t.finished),
        not_before_time=ts(t.not_before),
        timeout=dur(t.timeout_ms),
        result_json=t.result,
        error=error_to_pb(t.error),
        last_sequence=t.last_sequence,
        idempotency_key=t.idempotency_key,
        cancel_requested=t.cancel_requested,
        progress=progress,
        time_to_first_output=dur(t.time_to_first_output_ms),
        limits=limits_to_pb(t.limits),
        waiting=waiting_of(t),
        tenant=t.tenant,
        scheduling=pb.Scheduling(
            priority=t.scheduling.priority,
            fairness_key=t.scheduling.fairness_key,
            fairness_weight=t.scheduling.fairness_weight,
        ),
    )


def limits_to_pb(limits: TaskLimits) -> pb.TaskLimits | None:
    """A task's limits; None when it has none."""
    if not limits:
        return None
    return pb.TaskLimits(
        concurrency_key=limits.concurrency_key,
        concurrency_limit=limits.concurrency_limit,
        rate_key=limits.rate_key,
        rate_limit=limits.rate_count,
        rate_period=dur(limits.rate_period_ms or None),
    )


def waiting_of(t: TaskRecord) -> pb.Waiting | None:
    """The limit that holds the task back now, if any."""
    if not t.waiting_for:
        return None
    lim = t.limits
    if t.waiting_for.startswith("c:"):
        return pb.Waiting(
            reason="concurrency",
            key=lim.concurrency_key,
            limit=lim.concurrency_limit,
            attempt=t.attempt + 1,
        )
    if t.waiting_for.startswith("t:"):
        return pb.Waiting(
            reason="tokens",
            key=t.waiting_for[2:],
            limit=t.token_budget[0],
            period=dur(t.token_budget[1]),
            attempt=t.attempt + 1,
        )
    return pb.Waiting(
        reason="rate",
        key=lim.rate_key,
        limit=lim.rate_count,
        period=dur(lim.rate_period_ms),
        attempt=t.attempt + 1,
    )


def event_to_pb(e: EventRecord) -> pb.TaskEvent:
    """The public view of a stored event."""
    f = e.fields
    out = pb.TaskEvent(task_id=e.task_id, sequence=e.sequence, time=ts(int(f.get("ts", 0))))
    attempt = int(f.get("attempt") or 0)
    if e.type == "state":
        change = out.state_changed
        change.state = state_to_pb(State(f["state"]))
        change.attempt = attempt
        change.result_json = f.get("result", "")
        change.reason = f.get("reason", "")
        error = error_to_pb(TaskError.from_json(f.get("error", "")))
        if error is not None:
            change.error.CopyFrom(error)
        if f.get("next"):
            change.next_attempt_time.FromMilliseconds(int(f["next"]))
    elif e.type == "progress":
        out.progress.fraction = float(f.get("fraction", 0))
        out.progress.message = f.get("message", "")
        out.progress.attempt = attempt
    elif e.type == "output":
        out.output.text = f.get("text", "")
        out.output.attempt = attempt
    elif e.type == "reset":
        out.output_reset.attempt = attempt
    elif e.type == "waiting":
        out.waiting.reason = f.get("reason", "")
        out.waiting.key = f.get("key", "")
        out.waiting.limit = int(f.get("limit") or 0)
        out.waiting.attempt = attempt
        if f.get("period"):
            out.waiting.period.FromMilliseconds(int(f["period"]))
    return out


def watch_item_to_pb(item: Item) -> pb.TaskEvent:
    """One item of a watch session: a stored event, a keep-alive or a trim notice."""
    if isinstance(item, KeepAlive):
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(item.time_ns)
        return pb.TaskEvent(task_id=item.task_id, sequence=0, time=now, keep_alive=pb.KeepAlive())
    if isinstance(item, Trimmed):
        gone = pb.EventsTrimmed(first_available_sequence=item.first_available)
        return pb.TaskEvent(task_id=item.task_id, sequence=0, events_trimmed=gone)
    return event_to_pb(item)


def stats_to_pb(
    queues: list[QueueFigures],
    kinds: list[KindFigures],
    workers: list[WorkerRecord],
    *,
    watch_streams_open: int = 0,
    limits: list[LimitFigures] | None = None,
    tenant: str = DEFAULT_TENANT,
) -> pb.GetStatsResponse:
    """The whole GetStats answer; `watch_streams_open` is this process's own count, `kinds`
    are `tenant`'s."""
    return pb.GetStatsResponse(
        tenant=tenant,
        queues=[queue_stats_to_pb(q, workers) for q in queues],
        kinds=[kind_stats_to_pb(k) for k in kinds],
        workers=[worker_to_pb(w) for w in workers],
        watch_streams_open=watch_streams_open,
        limits=[limit_stats_to_pb(f) for f in limits or []],
    )


def limit_stats_to_pb(f: LimitFigures) -> pb.LimitStats:
    """One limit key's figures."""
    return pb.LimitStats(
        reason=f.reason,
        key=f.key,
        limit=f.limit,
        period=dur(f.period_ms or None),
        running=f.busy,
        waiting=f.waiting,
    )


def kind_to_pb(k: Kind) -> pb.Kind:
    """One registered kind for ListKinds."""
    timeout = duration_pb2.Duration()
    timeout.FromMilliseconds(k.info.timeout_ms)
    return pb.Kind(
        name=k.name,
        queue=k.info.queue,
        max_attempts=k.info.max_attempts,
        timeout=timeout,
        payload_schema_json=k.info.schema,
        served=k.served,
        last_seen=ts(k.info.seen_ms),
    )


def queue_stats_to_pb(queue: QueueFigures, workers: list[WorkerRecord]) -> pb.QueueStats:
    """One queue's figures, with the capacity of the live workers that consume it."""
    serving = [w for w in workers if queue.name in w.queues]
    return pb.QueueStats(
        name=queue.name,
        depth=queue.depth,
        running=queue.running,
        delayed=queue.delayed,
        dead=queue.dead,
        workers=len(serving),
        slots=sum(w.slots for w in serving),
        slots_used=sum(w.slots_used for w in serving),
        threads=sum(w.threads for w in serving),
        threads_busy=sum(w.threads_busy for w in serving),
    )


def kind_stats_to_pb(k: KindFigures) -> pb.KindStats:
    """One kind's counts per state and run-time percentiles (unset without samples)."""
    return pb.KindStats(
        kind=k.kind,
        pending=k.counts.get(State.PENDING, 0),
        running=k.counts.get(State.RUNNING, 0),
        retrying=k.counts.get(State.RETRYING, 0),
        succeeded=k.counts.get(State.SUCCEEDED, 0),
        failed=k.counts.get(State.FAILED, 0),
        cancelled=k.counts.get(State.CANCELLED, 0),
        run_time_p50=dur(k.p50_ms),
        run_time_p90=dur(k.p90_ms),
        run_time_p99=dur(k.p99_ms),
        run_time_samples=k.samples,
    )


def worker_to_pb(w: WorkerRecord) -> pb.WorkerStats:
    """One live worker process."""
    return pb.WorkerStats(
        id=w.id,
        queues=w.queues,
        slots=w.slots,
        slots_used=w.slots_used,
        threads=w.threads,
        threads_busy=w.threads_busy,
        last_seen=ts(w.seen_ms),
    )
