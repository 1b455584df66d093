"""RedriveTasks' rules: check the request, select the tasks, and start the operation.

The server's part ends with its answer: it snapshots the selected ids into the operation's list,
records the operation as a task of the built-in kind `taskcast.redrive`, and workers do the rest
(`worker/kinds/redrive.py`), so a server restart mid-operation changes nothing.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field

from taskcast.core.calls import REDRIVE_KIND, REDRIVE_QUEUE, NewTask
from taskcast.core.capacity import LIVE_MS
from taskcast.core.records import TaskRecord
from taskcast.core.states import State
from taskcast.server import finished, validation
from taskcast.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from taskcast.server.finished import Filter, Selection
from taskcast.server.store import ServerStore

REDRIVABLE = (State.FAILED, State.CANCELLED)
MIN_RATE, MAX_RATE = 0.1, 10_000.0  # tasks per second
MAX_SELECTED = 100_000  # ids one operation snapshots (about 3.6 MB of list)
MAX_SAMPLE, DEFAULT_SAMPLE = 100, 10
MAX_ERROR_TYPE = 256
# Attempts of the operation task: each lost worker costs one (the next goes on from the cursor).
OPERATION_ATTEMPTS = 20

Pair = tuple[int, int]  # a Timestamp as (seconds, nanos)


@dataclass(frozen=True)
class RedriveRequest:
    """A RedriveTasksRequest as plain values; unset Timestamps as None."""

    states: list[State | None] = field(default_factory=list)  # None: unspecified or unknown
    kind: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    error_type: str = ""
    finished_after: Pair | None = None
    finished_before: Pair | None = None
    max_per_second: float = 0.0
    dry_run: bool = False
    sample_size: int = 0
    request_id: str = ""


def check(r: RedriveRequest, p: validation.Problems) -> Filter:
    """The filter of a request; every bad field is added to `p` (the caller raises)."""
    states = [s for s in r.states if s is not None]
    if len(states) < len(r.states) or any(s not in REDRIVABLE for s in states):
        p.add("filter.states", "may hold only TASK_STATE_FAILED and TASK_STATE_CANCELLED")
    if r.kind:
        validation.kind(r.kind, p, "filter.kind")
    validation.labels(r.labels, p, "filter.labels")
    if len(r.error_type) > MAX_ERROR_TYPE or not r.error_type.isprintable():
        p.add("filter.error_type", f"must be at most {MAX_ERROR_TYPE} printable characters")
    after = validation.timestamp_ms(r.finished_after, "filter.finished_after", p) or 0
    before = validation.timestamp_ms(r.finished_before, "filter.finished_before", p) or 0
    if after and before and before <= after:
        p.add("filter.finished_before", "must be after finished_after")
    rate = r.max_per_second
    valid = math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE
    if (rate or not r.dry_run) and not valid:  # a dry run needs none, but checks one given
        p.add("max_per_second", f"must be {MIN_RATE} to {MAX_RATE:,.0f} (required)")
    if not 0 <= r.sample_size <= MAX_SAMPLE:
        p.add("sample_size", f"must be 1 to {MAX_SAMPLE} (0: {DEFAULT_SAMPLE})")
    validation.idempotency_key(r.request_id, p, "request_id")
    unique = tuple(dict.fromkeys(states)) or REDRIVABLE
    return Filter(unique, r.kind, dict(r.labels), r.error_type, after, before)


def fingerprint(f: Filter, rate: float) -> str:
    """What makes two requests with one request_id "the same request"."""
    return validation.fingerprint(
        sorted(s.value for s in f.states),
        f.kind,
        sorted(f.labels.items()),
        f.error_type,
        f.after_ms,
        f.before_ms,
        rate,
    )


def operation(f: Filter, rate: float, selection: Selection, key: str, retention_s: int) -> NewTask:
    """The operation task: its payload says what it does; its time limit fits its pace twice."""
    total = len(selection.ids)
    limit_s = min(max(60.0, 2 * total / rate + 60), retention_s)
    payload = {
        "max_per_second": rate,
        "total": total,
        "truncated": selection.truncated,
        "filter": {
            "states": [s.value for s in f.states],
            "kind": f.kind,
            "labels": f.labels,
            "error_type": f.error_type,
            "finished_after_ms": f.after_ms,
            "finished_before_ms": f.before_ms,
        },
    }
    return NewTask(
        kind=REDRIVE_KIND,
        queue=REDRIVE_QUEUE,
        payload=json.dumps(payload),
        labels={},
        max_attempts=OPERATION_ATTEMPTS,
        timeout_ms=int(limit_s * 1000),
        not_before_ms=0,
        idempotency_key=key,
        fingerprint=fingerprint(f, rate) if key else "",
        tenant=f.tenant,  # the caller's: it alone may watch, get or cancel its operation
    )


def check_pace(total: int, rate: float, retention_s: int) -> None:
    """InvalidArgument when `total` retries at `rate` take more than half the retention: the
    snapshot (and the operation's time limit, twice its pace) last the retention, so a slower
    operation would fail part-way, with TimeLimitExceeded or its snapshot gone."""
    if total / rate <= retention_s / 2:
        return
    least = math.ceil(total / (retention_s / 2) * 100) / 100
    raise InvalidArgument(
        [
            (
                "max_per_second",
                f"at {rate:g} a second the {total:,} selected tasks take {total / rate:,.0f} s, "
                f"more than half the retention ({retention_s:,} s) that keeps the operation's "
                f"snapshot: give at least {least:g}, or narrow the filter",
            )
        ]
    )


@dataclass(frozen=True)
class Started:
    """The operation a RedriveTasks call started, or found by its request_id."""

    operation: TaskRecord
    count: int
    truncated: bool
    created: bool


async def start(store: ServerStore, f: Filter, rate: float, request_id: str) -> Started:
    """Select `f.tenant`'s tasks, snapshot them and record the operation as that tenant's task,
    or find the one this request_id started (request ids are per tenant, as idempotency keys).

    Raises:
        FailedPrecondition: No live worker serves `taskcast.redrive` (it would never run).
        AlreadyExists: The request_id belongs to a different request.
    """
    key = f"{REDRIVE_KIND}/{request_id}" if request_id else ""
    if key and (earlier := await finished.idempotent(store, key, f.tenant)) is not None:
        if earlier[1] != fingerprint(f, rate):
            raise AlreadyExists(
                f"request_id {request_id!r} started operation {earlier[0]} with a different request"
            )
        return _found(await store.get(earlier[0], f.tenant))
    info = (await store.kinds(refresh=True)).get(REDRIVE_KIND)
    if info is None or await store.now() - info.seen_ms >= LIVE_MS:
        raise FailedPrecondition(
            f"no live worker serves {REDRIVE_KIND}, which runs redrives; start a worker of "
            "this taskcast version",
            subject=f"taskcast.v1.Kind/{REDRIVE_KIND}",
            type_="WORKER",
        )
    selection = await finished.select(store, f, MAX_SELECTED)
    check_pace(len(selection.ids), rate, store.layout.retention_s)
    op_id = uuid.uuid4().hex
    await finished.snapshot(store, op_id, selection.ids)
    new = operation(f, rate, selection, key, store.layout.retention_s)
    record, created = await store.submit(op_id, new)
    if not created:  # a concurrent twin with the same request_id won: drop this snapshot
        await finished.drop_snapshot(store, op_id)
        return _found(record)
    return Started(record, len(selection.ids), selection.truncated, True)


def _found(record: TaskRecord) -> Started:
    """An operation started earlier, as its payload describes it."""
    payload = json.loads(record.payload)
    return Started(record, int(payload["total"]), bool(payload["truncated"]), False)
