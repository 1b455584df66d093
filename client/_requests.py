"""The client core: every decision the sync and async clients make, with no I/O.

Both clients are thin loops over it: they send the request a `Unary`, `Pages` or `Watch` holds,
hand the reply back, and sleep as long as a `Watch` says. Building requests from arguments,
decoding replies, paging, resuming a broken watch and its backoff live here, once.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeGuard, TypeVar, Unpack

import grpc
from google.protobuf.message import Message

from taskcast.client._errors import (
    RESUMABLE,
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
    from_grpc,
    retry_delay,
)
from taskcast.client._types import Event, Kind, Redrive, Stats, Task, TaskState
from taskcast.v1 import tasks_pb2 as pb

T = TypeVar("T")
C = TypeVar("C")

DEFAULT_SERVER = "127.0.0.1:50051"

_RETRY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# gRPC's own retries for the calls that are safe to repeat: a submit (each item of a batch)
# carries an idempotency key.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "taskcast.v1.TaskService", "method": m}
                    for m in (
                        "SubmitTask",
                        "SubmitTasks",
                        "GetTask",
                        "ListTasks",
                        "GetStats",
                        "ListKinds",
                        "RedriveTasks",  # carries a request_id
                    )
                ],
                "retryPolicy": _RETRY,
            }
        ]
    }
)

# Ping an idle connection every 30 s so a dead peer or a NAT that dropped it is noticed; the
# server permits pings 10 s apart (server/app.py), so 30 s never earns a GOAWAY too_many_pings.
KEEPALIVE_TIME_MS = 30_000
# A ping unanswered for 10 s closes the connection; a watch then resumes on a new one.
KEEPALIVE_TIMEOUT_MS = 10_000
# Replies up to 64 MiB: the server's max_send_message_length is the same, so anything larger
# fails there with RESOURCE_EXHAUSTED before it crosses the network (server/app.py).
MAX_RECEIVE_BYTES = 64 << 20

CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
]


def call_metadata(
    metadata: list[tuple[str, str]] | None, token: str | None
) -> list[tuple[str, str]] | None:
    """The metadata sent with every call: the caller's, plus the bearer token if there is one
    (`token`, else `TASKCAST_TOKEN`)."""
    token = token or os.environ.get("TASKCAST_TOKEN")
    if not token:
        return metadata
    return [*(metadata or []), ("authorization", f"Bearer {token}")]


def server_address(address: str | None) -> str:
    """The address given, else `TASKCAST_SERVER`, else 127.0.0.1:50051."""
    return address or os.environ.get("TASKCAST_SERVER") or DEFAULT_SERVER


class SubmitOptions(TypedDict, total=False):
    """The keyword arguments of `submit`; see `TaskClient.submit` for each."""

    queue: str | None
    labels: Mapping[str, str] | None
    delay: float | dt.timedelta | None
    not_before: dt.datetime | None
    max_attempts: int | None
    timeout: float | dt.timedelta | None
    idempotency_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    priority: int | None
    fairness_key: str | None
    fairness_weight: float | None


class ListOptions(TypedDict, total=False):
    """The keyword arguments of `list`; see `TaskClient.list` for each."""

    state: str | None
    kind: str | None
    labels: Mapping[str, str] | None
    limit: int | None
    page_size: int
    include_payloads: bool


class RedriveOptions(TypedDict, total=False):
    """The keyword arguments of `redrive`; see `TaskClient.redrive` for each."""

    states: Sequence[str] | None
    kind: str | None
    labels: Mapping[str, str] | None
    error_type: str | None
    finished_after: dt.datetime | None
    finished_before: dt.datetime | None
    max_per_second: float | None
    dry_run: bool
    sample_size: int | None
    request_id: str | None


class WatchOptions(TypedDict, total=False):
    """The keyword arguments of `watch`; see `TaskClient.watch` for each."""

    keep_alives: bool
    timeout: float | None


def _duration(seconds: float | dt.timedelta, target: Any) -> None:
    target.FromTimedelta(
        seconds if isinstance(seconds, dt.timedelta) else dt.timedelta(seconds=seconds)
    )


def submit_request(
    kind: str, payload: Mapping[str, Any] | str | None, **options: Unpack[SubmitOptions]
) -> pb.SubmitTaskRequest:
    """A SubmitTaskRequest; a fresh idempotency key when none is given, so retries are safe."""
    text = payload if isinstance(payload, str) else json.dumps(dict(payload or {}))
    req = pb.SubmitTaskRequest(
        kind=kind,
        payload_json=text,
        queue=options.get("queue") or "",
        labels=dict(options.get("labels") or {}),
        idempotency_key=options.get("idempotency_key") or f"auto-{uuid.uuid4().hex}",
        max_attempts=options.get("max_attempts") or 0,
        concurrency_key=options.get("concurrency_key") or "",
        concurrency_limit=options.get("concurrency_limit") or 0,
        priority=options.get("priority") or 0,
        fairness_key=options.get("fairness_key") or "",
        fairness_weight=options.get("fairness_weight") or 0.0,
    )
    if (delay := options.get("delay")) is not None:
        _duration(delay, req.delay)
    if (not_before := options.get("not_before")) is not None:
        req.not_before.FromDatetime(not_before)
    if (timeout := options.get("timeout")) is not None:
        _duration(timeout, req.timeout)
    return req


def list_request(
    state: str | None,
    kind: str | None,
    labels: Mapping[str, str] | None,
    page_size: int,
    page_token: str,
    include_payloads: bool = False,
) -> pb.ListTasksRequest:
    """A ListTasksRequest; `state` by name ("RUNNING")."""
    return pb.ListTasksRequest(
        state=_state(state) if state else pb.TASK_STATE_UNSPECIFIED,
        kind=kind or "",
        labels=dict(labels or {}),
        page_size=page_size,
        page_token=page_token,
        include_payloads=include_payloads,
    )


@dataclass(frozen=True)
class Unary(Generic[T]):
    """One unary call to make: the RPC's name, its request, and what its reply becomes."""

    rpc: str
    request: Message
    decode: Callable[[Any], T]


def _task(reply: Any) -> Task:
    return Task.from_pb(reply.task)


def submit(
    kind: str, payload: Mapping[str, Any] | str | None, **options: Unpack[SubmitOptions]
) -> Unary[Task]:
    """SubmitTask; the reply is the recorded task."""
    return Unary("SubmitTask", submit_request(kind, payload, **options), _task)


def get(task_id: str) -> Unary[Task]:
    """GetTask; the reply is the task now."""
    return Unary("GetTask", pb.GetTaskRequest(task_id=task_id), _task)


def cancel(task_id: str, reason: str) -> Unary[Task]:
    """CancelTask; the reply is the task after the cancel."""
    return Unary("CancelTask", pb.CancelTaskRequest(task_id=task_id, reason=reason), _task)


def retry(task_id: str, request_id: str | None) -> Unary[Task]:
    """RetryTask; the reply is the task after the retry (PENDING when this call retried it)."""
    request = pb.RetryTaskRequest(task_id=task_id, request_id=request_id or "")
    return Unary("RetryTask", request, _task)


def redrive(**options: Unpack[RedriveOptions]) -> Unary[Redrive]:
    """RedriveTasks; a fresh request_id when none is given, so a resent call starts one
    operation. States by name ("FAILED")."""
    dry_run = bool(options.get("dry_run"))
    states = options.get("states") or ()
    f = pb.RedriveFilter(
        # One name is one state, not its letters (a str is a Sequence[str] to the type checker).
        states=[_state(s) for s in ((states,) if isinstance(states, str) else states)],
        kind=options.get("kind") or "",
        labels=dict(options.get("labels") or {}),
        error_type=options.get("error_type") or "",
    )
    if (after := options.get("finished_after")) is not None:
        f.finished_after.FromDatetime(after)
    if (before := options.get("finished_before")) is not None:
        f.finished_before.FromDatetime(before)
    auto = "" if dry_run else f"auto-{uuid.uuid4().hex}"
    request = pb.RedriveTasksRequest(
        filter=f,
        max_per_second=options.get("max_per_second") or 0.0,
        dry_run=dry_run,
        sample_size=options.get("sample_size") or 0,
        request_id=options.get("request_id") or auto,
    )
    return Unary("RedriveTasks", request, Redrive.from_pb)


def _state(name: str) -> pb.TaskState.ValueType:
    """A state by name ("FAILED", "failed"); ValueError naming the states for any other."""
    try:
        return pb.TaskState.Value(f"TASK_STATE_{name.upper()}")
    except ValueError:
        names = ", ".join(n.removeprefix("TASK_STATE_") for n in pb.TaskState.keys()[1:])
        raise ValueError(f"unknown state {name!r}: one of {names}") from None


def watch_token(task_id: str, ttl: float | dt.timedelta, cancel: bool) -> Unary[str]:
    """CreateWatchToken; the reply is the token."""
    request = pb.CreateWatchTokenRequest(task_id=task_id, allow_cancel=cancel)
    _duration(ttl, request.ttl)
    return Unary("CreateWatchToken", request, lambda r: str(r.token))


def stats() -> Unary[Stats]:
    """GetStats; the reply is the whole `Stats`."""
    return Unary("GetStats", pb.GetStatsRequest(), Stats.from_pb)


def kinds() -> Unary[list[Kind]]:
    """ListKinds; the reply is every registered kind, by name."""
    return Unary("ListKinds", pb.ListKindsRequest(), lambda r: [Kind.from_pb(k) for k in r.kinds])


class Pages:
    """One `list`: the next page to ask for, and which tasks of each reply to hand on."""

    def __init__(self, **options: Unpack[ListOptions]) -> None:
        self.options = options
        self._left = options.get("limit")  # tasks still wanted; None for all
        if self._left is not None and self._left < 0:  # it sliced each page from its end
            raise ValueError(f"limit must be 0 or more (None: all), got {self._left}")
        self._token: str | None = ""  # the next page's token; None once there is none

    def next(self) -> Unary[list[Task]] | None:
        """The call for the next page, or None when the listing is done."""
        if self._token is None or self._left == 0:
            return None
        o = self.options
        req = list_request(
            o.get("state"),
            o.get("kind"),
            o.get("labels"),
            o.get("page_size", 100),
            self._token,
            o.get("include_payloads", False),
        )
        return Unary("ListTasks", req, self._receive)

    def _receive(self, reply: pb.ListTasksResponse) -> list[Task]:
        tasks = reply.tasks[: self._left]
        if self._left is not None:
            self._left -= len(tasks)
        self._token = reply.next_page_token or None
        return [Task.from_pb(t) for t in tasks]


class Reconnect:
    """When a watch stream breaks: back off with jitter; give up after `budget` failing seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._since: float | None = None
        self._delay = 0.05

    def ok(self) -> None:
        """An event arrived: the connection is healthy again."""
        self._since, self._delay = None, 0.05

    def next_delay(self, hint: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None to give up.

        Exponential from 50 ms to 2 s with jitter, so a burst of rejected streams comes back
        spread out; never sooner than the server's RetryInfo `hint` (capped at 30 s).
        """
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since > self.budget:
            return None
        delay, self._delay = self._delay, min(self._delay * 2, 2.0)
        delay *= random.uniform(0.5, 1.0)
        if hint is not None:
            delay = max(delay, min(hint, 30.0) * random.uniform(1.0, 1.2))
        return delay


class Watch:
    """One `watch`: what to ask for next, which events to hand on, and how a break resumes."""

    rpc = "WatchTask"  #: the streaming RPC it opens

    def __init__(
        self,
        task_id: str,
        after_sequence: int,
        reconnect_for: float,
        **options: Unpack[WatchOptions],
    ) -> None:
        self.task_id = task_id
        self.what = task_id  #: what it watches, for messages
        self.last = after_sequence  #: the last sequence handed on: a resume starts after it
        self.reconnect_for = reconnect_for
        self.keep_alives = options.get("keep_alives", False)
        timeout = options.get("timeout")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._policy = Reconnect(reconnect_for)

    def request(self) -> Message:
        """The request that opens (or resumes) the stream."""
        return pb.WatchTaskRequest(task_id=self.task_id, after_sequence=self.last)

    def time_left(self) -> float | None:
        """The next stream's timeout: what is left of `timeout`, or None without one."""
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def receive(self, raw: pb.TaskEvent) -> Event | None:
        """The event to hand on, or None for a keep-alive the caller did not ask for."""
        self._policy.ok()
        event = Event.from_pb(raw)
        if raw.sequence:
            self.last = raw.sequence
        elif not self.keep_alives and event.type == "keep_alive":
            return None
        return event

    def resume_after(self, exc: grpc.RpcError, *, closed: bool) -> float:
        """Seconds to wait before resuming after the stream broke with `exc`.

        The wait never runs past `timeout`: the next stream then fails at once with
        DEADLINE_EXCEEDED instead of the watch sleeping longer than it was allowed to.

        Raises:
            RpcError: `exc` as its typed exception, when its code is not one to resume after
                or the client was closed; or, when the stream kept breaking for
                `reconnect_for` seconds, the typed exception of the last break's code
                (`ResourceExhaustedError` for a server at its watcher limit).
        """
        err = from_grpc(exc)
        # CANCELLED also comes from grpc-core refusing a burst of new streams; the one from the
        # client's own close() must not be retried.
        if err.code not in RESUMABLE or closed:
            raise err from exc
        delay = self._policy.next_delay(retry_delay(err))
        if delay is None:
            # The class of the code that kept it failing: always raising UnavailableError
            # turned a watcher limit into UnavailableError("RESOURCE_EXHAUSTED: ...").
            raise type(err)(
                err.code,
                f"gave up resuming the watch of {self.what} "
                f"after {self.reconnect_for:.0f}s: {err.message}",
                err.details,
            ) from exc
        left = self.time_left()
        return delay if left is None else min(delay, left)


class Handle(Generic[C]):
    """What both handles hold: the client they call, the task id, the task as last seen."""

    def __init__(self, client: C, task_id: str, task: Task | None = None) -> None:
        self.client = client
        self.id = task_id
        self.task = task  #: the task as last seen, if any

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"


class Settings:
    """What both clients hold besides a channel: address, timeout, metadata, reconnect budget."""

    def __init__(
        self,
        address: str | None,
        timeout: float,
        metadata: list[tuple[str, str]] | None,
        reconnect_for: float,
        token: str | None,
    ) -> None:
        self.address = server_address(address)
        self.timeout = timeout
        self.metadata = call_metadata(metadata, token)
        self.reconnect_for = reconnect_for
        self._closed = False

    def metadata_for(self, rpc: str) -> list[tuple[str, str]] | None:
        """The metadata of a call of `rpc`: a submit also carries the current trace context."""
        parent = traceparent() if rpc in ("SubmitTask", "SubmitTasks") else ""
        if not parent or any(k == "traceparent" for k, _ in self.metadata or ()):
            return self.metadata
        return [*(self.metadata or []), ("traceparent", parent)]


def traceparent() -> str:
    """The current OpenTelemetry context as a W3C traceparent ("" when there is none, or when
    opentelemetry-api is not installed: the client needs only grpcio and protobuf)."""
    inject = _otel_inject()
    if inject is None:
        return ""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


@functools.cache
def _otel_inject() -> Callable[[dict[str, str]], None] | None:
    try:  # imported on the first submit, not with the client
        from opentelemetry.propagate import inject
    except ImportError:
        return None
    return inject


def wait_timeout(task_id: str, timeout: float | None) -> WaitTimeoutError:
    """The error `wait` raises when `timeout` passed before the task ended."""
    return WaitTimeoutError(f"task {task_id} not finished after {timeout}s")


def succeeded(last: Event | None) -> TypeGuard[Event]:
    """Whether a wait's stream ended on the task's success. Its event carries the result and a
    success is final, so `wait` returns it without a GetTask: one round trip fewer per task
    (16 callers submitting and waiting, three pairs back to back: 5.4-5.7 -> 4.1-5.0 CPU-ms per
    task over all processes, docs/performance.md)."""
    return last is not None and last.state is TaskState.SUCCEEDED


def outcome(task: Task) -> Any:
    """What `wait` returns for a task whose stream ended: its result, else its error raised."""
    if task.state is TaskState.SUCCEEDED:
        return task.result
    if task.state is TaskState.CANCELLED:
        raise TaskCancelledError(task)
    if task.state is TaskState.FAILED:
        raise TaskFailedError(task)
    raise WaitTimeoutError(f"task {task.id} ended its stream in state {task.state}")
