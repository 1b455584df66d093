"""SubmitTask's rules: a request checked whole, the kind's defaults applied, then a NewTask;
and SubmitTasks': the same rules per item, the valid items stored in one pipeline.

Idempotency compares the *effective* request: a field left at its default and the same value
given explicitly are the same request (`max_attempts=1` where 1 is the kind's default).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from taskcast.core import scheduling
from taskcast.core.calls import NewTask
from taskcast.core.kinds import ANY_KIND, KindInfo
from taskcast.core.records import TaskRecord
from taskcast.core.scheduling import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY, Scheduling
from taskcast.core.scripts import now_ms
from taskcast.server import limits, schemas, traces, validation
from taskcast.server.config import ServerSettings
from taskcast.server.errors import InvalidArgument, ServiceError, clip
from taskcast.server.store import ServerStore
from taskcast.server.tenants import Caller

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

MAX_BATCH = 1000  # items per SubmitTasks call

Pair = tuple[int, int]  # (seconds, nanos) of a Timestamp or Duration


@dataclass(frozen=True)
class SubmitRequest:
    """A SubmitTaskRequest as plain values; Timestamps and Durations as (seconds, nanos)."""

    kind: str
    payload_json: str = ""
    queue: str = ""
    idempotency_key: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    delay: Pair | None = None
    not_before: Pair | None = None
    max_attempts: int = 0
    timeout: Pair | None = None
    concurrency_key: str = ""
    concurrency_limit: int = 0
    priority: int = 0  # 0: the default
    fairness_key: str = ""
    fairness_weight: float = 0.0  # 0: 1


async def new_task(r: SubmitRequest, store: ServerStore, settings: ServerSettings) -> NewTask:
    """The task to store; InvalidArgument naming every bad field at once."""
    p = validation.Problems()
    validation.kind(r.kind, p)
    payload = validation.payload(r.payload_json, settings.max_payload_bytes, p)
    validation.queue(r.queue, p)
    validation.labels(r.labels, p)
    if r.idempotency_key:
        validation.submit_key(r.idempotency_key, p)
    delay_ms, not_before, timeout_ms = _times(r, p)
    if not 0 <= r.max_attempts <= validation.MAX_ATTEMPTS:
        p.add(
            "max_attempts",
            f"must be between 1 and {validation.MAX_ATTEMPTS} (0: the kind's default)",
        )
    limits.check(r.concurrency_key, r.concurrency_limit, p)
    sched = _scheduling(r, p)
    p.check()
    info = await _kind(r.kind, store, settings)
    if info.schema:  # the kind declared a payload model: its fields are checked before queueing
        await schemas.check(r.kind, info.schema, payload)
    task_limits = limits.effective(r.kind, info, payload, r.concurrency_key, r.concurrency_limit)
    if r.queue:
        await _check_queue(r.queue, store, settings)
    queue = r.queue or info.queue
    max_attempts = r.max_attempts or info.max_attempts
    timeout_ms = timeout_ms or info.timeout_ms
    # Only a caller's key is compared with a later request: no key, nothing to digest.
    digest = ""
    if r.idempotency_key:
        digest = validation.fingerprint(
            r.kind,
            validation.canonical_payload(payload),
            queue,
            sorted(r.labels.items()),
            delay_ms,  # as asked: the same delay asked again is the same request
            not_before,
            max_attempts,
            timeout_ms,
            *([r.concurrency_key, r.concurrency_limit] if r.concurrency_key else []),
            *([sched.priority] if sched.priority != DEFAULT_PRIORITY else []),
            *([sched.fairness_key, sched.fairness_weight] if sched.fairness_key else []),
        )
    return NewTask(
        kind=r.kind,
        queue=queue,
        payload=payload,
        labels=dict(r.labels),
        max_attempts=max_attempts,
        timeout_ms=timeout_ms,
        not_before_ms=0 if delay_ms else not_before,
        delay_ms=delay_ms,  # from now by Redis's clock (submit.lua), not this server's
        idempotency_key=r.idempotency_key,
        fingerprint=digest,
        limits=task_limits,
        scheduling=sched,
    )


def owned(new: NewTask, caller: Caller) -> NewTask:
    """`new` as the caller's tenant's task, with the weight its tenants file gives it."""
    scheduling = replace(new.scheduling, tenant_weight=caller.weight)
    return replace(new, tenant=caller.tenant, scheduling=scheduling)


Outcome = tuple[TaskRecord, bool] | ServiceError  # (task, created) or the item's own error


async def submit_many(
    requests: list[SubmitRequest],
    store: ServerStore,
    settings: ServerSettings,
    tracer: Tracer | None,
    parent: str,
    caller: Caller,
) -> list[Outcome]:
    """SubmitTasks: each request checked as `new_task` does, on its own; the valid ones stored in
    one pipeline (`ServerStore.submit_many`), each as the caller's tenant's task (its idempotency
    key and indexes are that tenant's, as SubmitTask's). One outcome per request, in order.

    Raises:
        InvalidArgument: No requests, or more than `MAX_BATCH`.
    """
    if not 0 < len(requests) <= MAX_BATCH:
        raise InvalidArgument(
            [("tasks", f"has {len(requests)} items; give 1 to {MAX_BATCH:,} per call")]
        )
    out: list[Outcome | None] = []
    valid: list[tuple[str, NewTask]] = []
    for r in requests:
        try:
            new = owned(await new_task(r, store, settings), caller)
            valid.append((uuid.uuid4().hex, new))
            out.append(None)  # filled from the store's answers below
        except ServiceError as exc:
            out.append(exc)
    stored = iter(await traces.submit_many(store, tracer, valid, parent) if valid else [])
    return [next(stored) if o is None else o for o in out]


def _scheduling(r: SubmitRequest, p: validation.Problems) -> Scheduling:
    """The task's priority, fairness key and weight, each checked."""
    if r.priority and not HIGHEST_PRIORITY <= r.priority <= LOWEST_PRIORITY:
        p.add(
            "priority",
            f"must be {HIGHEST_PRIORITY} (starts first) to {LOWEST_PRIORITY} (last); "
            f"0 means the default, {DEFAULT_PRIORITY}",
        )
    key = r.fairness_key
    if key and (
        len(key.encode()) > scheduling.MAX_KEY_BYTES or any(c < " " or c == "\x7f" for c in key)
    ):
        p.add(
            "fairness_key", f"must be 1 to {scheduling.MAX_KEY_BYTES} bytes, no control characters"
        )
    weight = r.fairness_weight
    if weight and not scheduling.MIN_WEIGHT <= weight <= scheduling.MAX_WEIGHT:  # NaN fails too
        p.add(
            "fairness_weight",
            f"must be {scheduling.MIN_WEIGHT:g} to {scheduling.MAX_WEIGHT:g}; 0 means 1",
        )
    elif weight and not key:
        p.add("fairness_weight", "weighs a fairness_key against the others: give one")
    return Scheduling(r.priority or DEFAULT_PRIORITY, key, weight or 1.0)


def _times(r: SubmitRequest, p: validation.Problems) -> tuple[int, int, int]:
    """Delay, not_before and timeout in milliseconds (0: unset), each checked."""
    delay = validation.duration_ms(r.delay, "delay", p)
    not_before = validation.timestamp_ms(r.not_before, "not_before", p)
    timeout = validation.duration_ms(r.timeout, "timeout", p)
    if r.delay is not None and r.not_before is not None:
        p.add("delay", "give delay or not_before, not both")
    if delay is not None and not 0 <= delay <= validation.MAX_DELAY_MS:
        p.add("delay", "must be between 0 and 7 days")
    if not_before is not None and not_before > now_ms() + validation.MAX_DELAY_MS:
        p.add("not_before", "must be within 7 days from now")
    if timeout is not None and not 0 < timeout <= validation.MAX_TIMEOUT_MS:
        p.add("timeout", "must be at least 1 millisecond and at most 24 hours")
    return delay or 0, not_before or 0, timeout or 0


async def _kind(kind: str, store: ServerStore, settings: ServerSettings) -> KindInfo:
    kinds = await store.kinds()
    if kind not in kinds:
        kinds = await store.kinds(refresh=True)
    if kind in kinds:
        return kinds[kind]
    if settings.accept_any_kind:
        return ANY_KIND
    known = validation.listing(sorted(kinds)) or "none yet: start a worker first"
    raise InvalidArgument(
        [("kind", f"{clip(kind)!r} is not served by any worker; known kinds: {known}")]
    )


async def _check_queue(queue: str, store: ServerStore, settings: ServerSettings) -> None:
    # A message on a queue no worker consumes would wait forever: refuse it instead.
    served = {info.queue for info in (await store.kinds()).values()}
    if queue not in served and not settings.accept_any_kind:
        known = validation.listing(sorted(served)) or "none yet"
        problem = f"{clip(queue)!r} is not served by any worker; queues workers serve: {known}"
        raise InvalidArgument([("queue", problem)])
