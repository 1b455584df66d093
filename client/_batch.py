"""The client core of SubmitTasks, with no I/O: items as `TaskSpec`s, cut into calls, and each
call's answer read into a task or the item's own typed error.

A call carries at most `MAX_ITEMS` items and about `MAX_BYTES` of requests (the server takes
1,000 items and, by default, 1 MiB + 64 KiB per call): a longer list becomes several calls, in
order. Each item is its own submit: calls are not atomic together, and neither are items.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from taskcast.client._errors import RpcError, from_status
from taskcast.client._requests import Unary, submit_request
from taskcast.client._types import Task
from taskcast.v1 import tasks_pb2 as pb

MAX_ITEMS = 1000  # the server's limit per SubmitTasks call
# The server's message limit is its payload limit (1 MiB by default) + 64 KiB: 1 MiB of items
# leaves room for the envelope. An item larger than this on its own goes in a call of its own.
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class TaskSpec:
    """One task of `submit_many`: the arguments of `submit`, as a value.

    A plain mapping with the same keys (`{"kind": ..., "payload": ...}`) works as well.
    """

    kind: str
    payload: Mapping[str, Any] | str | None = None
    queue: str | None = None
    labels: Mapping[str, str] | None = None
    delay: float | dt.timedelta | None = None
    not_before: dt.datetime | None = None
    max_attempts: int | None = None
    timeout: float | dt.timedelta | None = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    priority: int | None = None
    fairness_key: str | None = None
    fairness_weight: float | None = None


Item = TaskSpec | Mapping[str, Any]  # what `submit_many` takes per task
Result = Task | RpcError  # one item's outcome, before the client wraps the task in a handle


def spec_of(item: Item) -> TaskSpec:
    """`item` as a TaskSpec; a mapping with a key TaskSpec lacks is a TypeError."""
    return item if isinstance(item, TaskSpec) else TaskSpec(**item)


def request_of(spec: TaskSpec) -> pb.SubmitTaskRequest:
    """The item's SubmitTaskRequest, built as `submit` builds it (a fresh key when it has none,
    so gRPC's own retry of the call never duplicates a task)."""
    options = asdict(spec)
    options.pop("kind"), options.pop("payload")
    return submit_request(spec.kind, spec.payload, **options)


def calls(items: Iterable[Item]) -> Iterator[tuple[Unary[list[Result]], int]]:
    """The SubmitTasks calls for `items`, in order, each with how many items it carries."""
    batch: list[pb.SubmitTaskRequest] = []
    size = 0
    for item in items:
        request = request_of(spec_of(item))
        n = request.ByteSize() + 8  # the repeated field's tag and length
        if batch and (len(batch) == MAX_ITEMS or size + n > MAX_BYTES):
            yield _call(batch), len(batch)
            batch, size = [], 0
        batch.append(request)
        size += n
    if batch:
        yield _call(batch), len(batch)


def _call(batch: list[pb.SubmitTaskRequest]) -> Unary[list[Result]]:
    return Unary("SubmitTasks", pb.SubmitTasksRequest(tasks=batch), decode)


def decode(reply: pb.SubmitTasksResponse) -> list[Result]:
    """Each item's task, or its error as the typed exception of its code."""
    return [
        from_status(r.error) if r.WhichOneof("result") == "error" else Task.from_pb(r.task.task)
        for r in reply.results
    ]
