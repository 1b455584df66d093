"""Each Lua script's Python pair: a function that builds a call (keys and arguments) and one that
reads its reply into a typed result. The stores only send the calls; nothing else knows a
script's argument order or reply shape.

Replies come from redis-py as lists of bytes and ints (hence `Any`): they are decoded here, once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from taskcast.core import mqlayout
from taskcast.core.layout import DEFAULT_TENANT, Layout
from taskcast.core.limits import TaskLimits, TokenLimit
from taskcast.core.records import EventRecord, TaskError, TaskRecord
from taskcast.core.scheduling import Scheduling
from taskcast.core.states import State


@dataclass(frozen=True)
class Call:
    """One call of one script: its name (`scripts.NAMES`), keys and arguments (common first)."""

    script: str
    keys: list[str]
    args: list[Any]


def _about(layout: Layout, script: str, task_id: str, *args: Any) -> Call:
    """A call about one task: its hash is the key (one Redis, but the key says what it touches)."""
    return Call(script, [layout.task(task_id)], [*layout.common_args(), task_id, *args])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tenant(value: bytes | str) -> str:
    """A tenant as a script returns it ("" for the default one)."""
    return _text(value) or DEFAULT_TENANT


def state_reply(reply: Any) -> State | None:
    """The state `finish`, `reap` or `abandon` moved the task to; None when it changed nothing
    (the attempt no longer owns the task, or the task moved on meanwhile)."""
    text = _text(reply[0])
    return None if text in ("stale", "skip") else State(text)


# submit
@dataclass(frozen=True)
class NewTask:
    """A validated submission."""

    kind: str
    queue: str
    payload: str
    labels: dict[str, str]
    max_attempts: int
    timeout_ms: int
    not_before_ms: int  # a client's absolute time, or 0
    idempotency_key: str
    fingerprint: str
    delay_ms: int = 0  # a client's delay from now: Redis's clock sets the start (submit.lua)
    trace: str = ""  # the W3C traceparent its attempts continue ("": not traced)
    # The effective per-key limits (core/limits.py).
    limits: TaskLimits = field(default_factory=TaskLimits)
    tenant: str = DEFAULT_TENANT  # whose task it is: its indexes, idempotency key, statistics
    scheduling: Scheduling = field(default_factory=Scheduling)  # priority and fair share


@dataclass(frozen=True)
class Submitted:
    """What `submit` did: created `task_id`, or found it (a known idempotency key, or this very
    call run again) with its `fingerprint`."""

    created: bool
    task_id: str
    created_ms: int = 0  # Redis's time, when created
    not_before_ms: int = 0  # when created
    fingerprint: str = ""  # the existing task's, when not created


def submit(layout: Layout, task_id: str, new: NewTask, *, live: bool = True) -> Call:
    """Record a task, its PENDING event and its first message; `live=False` stores the event
    without publishing it (nobody can watch a task before the reply names it: submit.lua)."""
    msg = mqlayout.encode(
        task_id=task_id,
        kind=new.kind,
        queue=new.queue,
        attempt=1,
        timeout_ms=new.timeout_ms,
        delay_ms=new.delay_ms,
        eta_ms=new.not_before_ms,
    )
    labels = [layout.label_member(k, v) for k, v in sorted(new.labels.items())]
    return _about(
        layout,
        "submit",
        task_id,
        new.kind,
        new.queue,
        new.payload,
        json.dumps(new.labels),
        new.max_attempts,
        new.not_before_ms,
        new.delay_ms,
        new.timeout_ms,
        new.idempotency_key,
        new.fingerprint,
        msg.queue,
        msg.redis_id,
        msg.data,
        new.trace,
        "1" if live else "0",
        layout.tenant_arg(new.tenant),
        *new.limits.args(),
        new.scheduling.field(layout.tenant_arg(new.tenant)),
        *labels,
    )


def submit_reply(reply: Any) -> Submitted:
    """Read `submit`'s reply."""
    if reply[0] == 1:
        return Submitted(True, _text(reply[1]), int(reply[2]), int(reply[3]))
    return Submitted(False, _text(reply[1]), fingerprint=_text(reply[2]))


# cancel
class CancelResult(enum.Enum):
    """What `cancel` did."""

    CANCELLED = "cancelled"  # the task was waiting: it is CANCELLED now
    REQUESTED = "requested"  # the task is running: its attempt was asked to stop
    FINISHED = "finished"  # the task had already finished: nothing to cancel
    MISSING = "missing"  # no such task (unknown, or expired)


@dataclass(frozen=True)
class Cancelled:
    """`cancel`'s reply: what it did, and the state of a task that had already finished."""

    result: CancelResult
    finished: State | None = None


def cancel(layout: Layout, task_id: str, reason: str) -> Call:
    """Cancel a waiting task now, or ask its running attempt to stop."""
    return _about(layout, "cancel", task_id, reason)


def cancel_reply(reply: Any) -> Cancelled:
    """Read `cancel`'s reply."""
    result = CancelResult(_text(reply[0]))
    finished = State(_text(reply[1])) if result is CancelResult.FINISHED else None
    return Cancelled(result, finished)


# retry
RETRY_FIELDS = ("attempt", "kind", "queue", "timeout_ms")  # what `retry` needs


class RetryResult(enum.Enum):
    """What `retry` did."""

    RETRIED = "retried"  # a new attempt series is enqueued: the task is PENDING again
    SAME = "same"  # this request id retried the task last: nothing done again
    STATE = "state"  # the task is not FAILED or CANCELLED: nothing to retry
    MOVED = "moved"  # the task changed since its fields were read: read them and call again
    MISSING = "missing"  # no such task (unknown, or expired)


@dataclass(frozen=True)
class Retried:
    """`retry`'s reply: what it did, the task when retried (or SAME), the state it refused."""

    result: RetryResult
    task: TaskRecord | None = None
    state: State | None = None


def retry(layout: Layout, task_id: str, request_id: str, fields: list[bytes]) -> Call:
    """Run a FAILED or CANCELLED task again, given its `RETRY_FIELDS`: the next attempt's message
    is enqueued with its PENDING event."""
    attempt, kind, queue, timeout_ms = (f.decode() for f in fields)
    msg = mqlayout.encode(
        task_id=task_id,
        kind=kind,
        queue=queue,
        attempt=int(attempt) + 1,
        timeout_ms=int(timeout_ms),
    )
    return _about(layout, "retry", task_id, attempt, request_id, msg.queue, msg.redis_id, msg.data)


def retry_reply(reply: Any) -> Retried:
    """Read `retry`'s reply."""
    result = RetryResult(_text(reply[0]))
    if result is RetryResult.STATE:
        return Retried(result, state=State(_text(reply[1])))
    if result in (RetryResult.RETRIED, RetryResult.SAME):
        flat = reply[1]
        return Retried(result, TaskRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True))))
    return Retried(result)


# redrive: one RedriveTasks step is `retry` with the operation's cursor (retry.lua)
REDRIVE_KIND = "taskcast.redrive"  # the built-in kind of RedriveTasks operations
REDRIVE_QUEUE = "taskcast"  # the queue of built-in operations; every worker consumes it


class StepResult(enum.Enum):
    """What one redrive step did with the id at the cursor."""

    RETRIED = "retried"  # retried; the cursor moved on
    SKIPPED = "skipped"  # no longer FAILED or CANCELLED, or gone; the cursor moved on
    MOVED = "moved"  # the task changed since its fields were read: read them and step again
    CURSOR = "cursor"  # the cursor was not at this position: another step did it


def redrive_request(op_id: str) -> str:
    """The retry request id of an operation's steps (so RetryTask's `same` check sees them)."""
    return f"redrive/{op_id}"


def redrive_step(
    layout: Layout, op_id: str, position: int, task_id: str, fields: list[bytes | None]
) -> Call:
    """Retry the task at `position` of operation `op_id`, given its `RETRY_FIELDS` (None when
    the task is gone), and advance the cursor with it atomically."""
    message: tuple[Any, ...] = ("", "", "")
    attempt = ""
    if fields[0] is not None:
        attempt, kind, queue, timeout_ms = (f.decode() if f else "" for f in fields)
        msg = mqlayout.encode(
            task_id=task_id,
            kind=kind,
            queue=queue,
            attempt=int(attempt) + 1,
            timeout_ms=int(timeout_ms or 0),
        )
        message = (msg.queue, msg.redis_id, msg.data)
    return _about(
        layout,
        "retry",
        task_id,
        attempt,
        redrive_request(op_id),
        *message,
        layout.redrive(op_id),
        position,
    )


def redrive_step_reply(reply: Any) -> StepResult:
    """Read one redrive step's reply."""
    text = _text(reply[0])
    if text in ("missing", "same", "state"):
        return StepResult.SKIPPED
    return StepResult(text)


# begin
@dataclass(frozen=True)
class Started:
    """What `begin` hands the handler when an attempt may run."""

    payload: str
    max_attempts: int
    trace: str = ""  # the traceparent stored with the task ("": not traced)
    waited_ms: int = -1  # first attempts: ms from due (created or not_before) to start; else -1
    tenant: str = DEFAULT_TENANT  # whose task it is (the worker's metrics count by tenant)


@dataclass(frozen=True)
class Skipped:
    """`begin` refused this delivery (a duplicate, a stale attempt, a finished task); why."""

    reason: str


@dataclass(frozen=True)
class Held:
    """`begin` held the task back for a limit: no attempt started; try again after `wait_ms`
    (0: back off), bringing `turn` (the rate limit's reserved turn, Redis ms; 0 for none)."""

    reason: str  # "concurrency", "rate" or "tokens"
    key: str
    limit: int
    wait_ms: int
    turn: int
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class Ack:
    """A delivered Dramatiq message for `begin` to acknowledge, as the consumer's ack would."""

    set: str  # the fetching broker's ack set of the queue (`MQLayout.acks`)
    queue: str  # the queue it was fetched from
    redis_id: str  # its id in the queue's message hash


def begin(
    layout: Layout,
    task_id: str,
    attempt: int,
    lease_ms: int,
    token: str,
    turn: int = 0,
    ack: Ack | None = None,
    tokens: TokenLimit | None = None,
) -> Call:
    """Start `attempt` under a lease, if its limits allow; `token` is unique per delivery,
    `turn` the one a rate limit reserved for it earlier (0: none). With `ack`, acknowledge the
    delivered Dramatiq message in the same script when the attempt runs or the delivery is
    skipped (a delivery a limit holds back stays Dramatiq's to ack). `tokens`: the kind's token
    budget, its key built from the payload by the worker."""
    acked = (ack.set, ack.queue, ack.redis_id) if ack else ("", "", "")
    budget = tokens.args() if tokens else []
    return _about(layout, "begin", task_id, attempt, lease_ms, token, turn, *acked, *budget)


def begin_reply(reply: Any) -> Started | Skipped | Held:
    """Read `begin`'s reply."""
    what = _text(reply[0])
    if what == "run":
        return Started(
            _text(reply[1]), int(reply[2]), _text(reply[3]), int(reply[4]), _tenant(reply[5])
        )
    if what == "wait":
        return Held(
            _text(reply[1]),
            _text(reply[2]),
            int(reply[3]),
            int(reply[4]),
            int(reply[5]),
            _tenant(reply[6]),
        )
    return Skipped(_text(reply[1]))


# event
@dataclass(frozen=True)
class Appended:
    """`event`'s reply: the event's sequence (0: refused) and whether a cancel was requested."""

    sequence: int
    cancel_requested: bool


def event(layout: Layout, task_id: str, attempt: int, n: int, fields: list[str]) -> Call:
    """Append a progress or output event of the running `attempt`; `n` counts its writes."""
    return _about(layout, "event", task_id, attempt, n, *fields)


def event_reply(reply: Any) -> Appended:
    """Read `event`'s reply."""
    return Appended(int(reply[0]), _text(reply[1]) == "1")


# finish
class Status(enum.StrEnum):
    """How an attempt ended."""

    OK = "ok"  # returned a result
    ERROR = "error"  # raised: the error says whether it may be retried
    CANCELLED = "cancelled"  # stopped at a cancel request


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as `finish` records it."""

    status: Status
    result: str = ""
    error: TaskError | None = None
    retry_delay_ms: int = 0
    tokens: int = -1  # tokens the handler reported using (`ctx.used_tokens`); -1: none reported


def finish(
    layout: Layout,
    task_id: str,
    attempt: int,
    outcome: Outcome,
    *,
    kind: str,
    queue: str,
    timeout_ms: int,
) -> Call:
    """Record how `attempt` ended, with the next attempt's message for a retryable error."""
    err = outcome.error
    retryable = err is not None and err.retryable
    msg = (
        mqlayout.encode(
            task_id=task_id,
            kind=kind,
            queue=queue,
            attempt=attempt + 1,
            timeout_ms=timeout_ms,
            delay_ms=outcome.retry_delay_ms,
        )
        if retryable
        else None
    )
    return _about(
        layout,
        "finish",
        task_id,
        attempt,
        outcome.status.value,
        outcome.result,
        err.to_json() if err else "",
        "1" if retryable else "0",
        outcome.retry_delay_ms,
        *((msg.queue, msg.redis_id, msg.data) if msg else ("", "", "")),
        outcome.tokens,
    )


finish_reply = state_reply


# reap
REAP_FIELDS = ("attempt", "kind", "queue", "timeout_ms", "max_attempts")  # what `reap` needs


def reap(layout: Layout, task_id: str, fields: list[bytes]) -> Call:
    """Give up on a lost attempt, given the task's `REAP_FIELDS`: retry it now, or fail."""
    attempt, kind, queue, timeout_ms, max_attempts = (f.decode() for f in fields)
    msg = mqlayout.encode(
        task_id=task_id,
        kind=kind,
        queue=queue,
        attempt=int(attempt) + 1,
        timeout_ms=int(timeout_ms),
    )
    what = (
        f"the worker running attempt {attempt} stopped renewing its lease "
        "(killed, out of memory, or cut off from Redis)"
    )
    retry = TaskError("WorkerLost", what + "; retrying", True)
    final = TaskError("WorkerLost", f"{what}; all {max_attempts} attempts used", False)
    return _about(
        layout,
        "reap",
        task_id,
        attempt,
        retry.to_json(),
        final.to_json(),
        msg.queue,
        msg.redis_id,
        msg.data,
    )


reap_reply = state_reply


# abandon
def abandon(layout: Layout, task_id: str, attempt: int, error: TaskError) -> Call:
    """Fail a waiting task whose kind no live worker serves; `attempt` is its message's."""
    return _about(layout, "abandon", task_id, attempt, error.to_json())


abandon_reply = state_reply


# leases
def renew(layout: Layout, lease_ms: int, task_ids: Iterable[str]) -> Call:
    """Extend the leases that still exist to Redis's time + `lease_ms`."""
    return Call("renew", [layout.leases()], [*layout.common_args(), lease_ms, *task_ids])


def renew_reply(reply: Any) -> int:
    """How many leases were extended."""
    return int(reply)


def expired(layout: Layout, limit: int) -> Call:
    """Up to `limit` tasks whose running attempt's lease ran out by Redis's clock."""
    return Call("expired", [layout.leases()], [*layout.common_args(), limit])


def expired_reply(reply: Any) -> list[str]:
    """The task ids."""
    return [_text(i) for i in reply]


# watching: interest in live events (`watched` in _lib.lua)
@dataclass(frozen=True)
class Admission:
    """A WatchTask's start (admit.lua): the task's state and last sequence, and the stored events
    after the cursor read in the same script, the first `count` of them."""

    state: State
    sequence: int
    events: list[EventRecord]
    complete: bool  # `events` are all there is after the cursor (no page or `tail` left to read)


def admit(
    layout: Layout, task_id: str, tenant: str, after: int, interest_ms: int, count: int
) -> Call:
    """Check the owner, register interest in the task's live events, read the events after
    `after`; a reply of None means NotFound."""
    return _about(layout, "admit", task_id, layout.tenant_arg(tenant), after, interest_ms, count)


def admit_reply(task_id: str, reply: Any, after: int, count: int) -> Admission | None:
    """Read `admit`'s reply (None: unknown, expired or another tenant's task)."""
    if not reply:
        return None
    seq, state, compacted, entries = reply
    events = [
        EventRecord.from_stream(task_id, entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        for entry_id, flat in entries
    ]
    sequence = int(seq)
    # A compacted task's terminal event is in its hash (`tail`): the reply did not read it.
    complete = len(events) < count and not (_text(compacted) == "1" and after < sequence)
    return Admission(State(_text(state)), sequence, events, complete)


def watch(layout: Layout, interest_ms: int, task_ids: Iterable[str], *, marks: bool) -> Call:
    """Register (or renew) interest in these tasks' live events until Redis's time +
    `interest_ms`; with `marks`, each task's state and last sequence is read after it."""
    return Call(
        "watch", [layout.watched()], [*layout.common_args(), interest_ms, int(marks), *task_ids]
    )


def watch_reply(reply: Any) -> list[tuple[State, int] | None]:
    """Each task's (state, last sequence), None when it is unknown or expired."""
    return [None if state is None else (State(_text(state)), int(seq)) for state, seq in reply]


# limits (GetStats)
@dataclass(frozen=True)
class LimitFigures:
    """One limit key now: `busy` is running (concurrency) or starts in the last period (rate)."""

    reason: str  # "concurrency", "rate" or "tokens"
    key: str
    limit: int
    period_ms: int  # rate and tokens (0 for concurrency)
    busy: int  # tokens: debited or reserved within the last period
    waiting: int  # tasks that emitted Waiting for it and have not started


REASONS = {"c": "concurrency", "r": "rate", "t": "tokens"}  # the first letter of a limit field


def limits(layout: Layout, most: int) -> Call:
    """Figures of up to `most` limit keys in use; forgets idle keys."""
    return Call("limits", [layout.limit_keys()], [*layout.common_args(), most])


def limits_reply(reply: Any) -> list[LimitFigures]:
    """Read `limits`' reply, sorted by reason and key."""
    out = []
    for i in range(0, len(reply), 4):
        field, value = _text(reply[i]), _text(reply[i + 1]).split(" ")
        reason = REASONS[field[0]]
        period = int(value[1]) if len(value) > 1 else 0
        out.append(
            LimitFigures(
                reason, field[2:], int(value[0]), period, int(reply[i + 2]), int(reply[i + 3])
            )
        )
    return sorted(out, key=lambda f: (f.reason, f.key))


# prune
@dataclass(frozen=True)
class Index:
    """A list index, with the set that lists it and its member there ("" for fixed ones)."""

    key: str
    listed_in: str = ""
    member: str = ""


def indexes(layout: Layout, kinds: Iterable[bytes], labels: Iterable[bytes]) -> list[Index]:
    """Every index of `layout`'s tenant, given the members of its `indexed_kinds()` and
    `indexed_labels()`."""
    return [
        Index(layout.index_all()),
        *(Index(layout.index_state(s.value)) for s in State),
        *(Index(layout.index_kind(k.decode()), layout.indexed_kinds(), k.decode()) for k in kinds),
        *(
            Index(layout.index_label(v.decode()), layout.indexed_labels(), v.decode())
            for v in labels
        ),
    ]


def prune(layout: Layout, index: Index, start: int, count: int) -> Call:
    """Check `count` old entries of `index` from rank `start`; drop those whose task is gone."""
    return Call(
        "prune",
        [index.key],
        [*layout.common_args(), index.key, start, count, index.listed_in, index.member],
    )


def prune_reply(reply: Any) -> tuple[int, int]:
    """Entries checked, entries dropped."""
    return int(reply[0]), int(reply[1])


# compact
def compact(layout: Layout, window_ms: int, count: int) -> Call:
    """Compact up to `count` tasks that finished more than `window_ms` ago (Redis's clock)."""
    return Call("compact", [layout.finished()], [*layout.common_args(), window_ms, count])


def compact_reply(reply: Any) -> tuple[int, int]:
    """Ids looked at, tasks compacted."""
    return int(reply[0]), int(reply[1])


# route, requeue: Dramatiq's own enqueues and requeues, to where a task's messages wait
def route(layout: Layout, queue: str, redis_id: str, data: bytes) -> Call:
    """Put a message Dramatiq enqueues itself where it waits: its task's bucket (route.lua)."""
    return Call("route", [layout.mq.msgs(queue)], [*layout.common_args(), queue, redis_id, data])


def requeue(layout: Layout, queue: str, acks: str, messages: list[tuple[str, str]]) -> Call:
    """Hand fetched messages ((message id, task id) pairs) back to their buckets (requeue.lua)."""
    pairs = [x for pair in messages for x in pair]
    return Call(
        "requeue", [acks, layout.mq.msgs(queue)], [*layout.common_args(), queue, acks, *pairs]
    )


# wake
def wake(layout: Layout, queue: str) -> Call:
    """Drop a wake-up token for the idle consumers of `queue` (the rule is `wake()` in Lua)."""
    return Call("wake", [layout.mq.wake(queue)], [*layout.common_args(), queue])
