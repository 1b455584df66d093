"""TaskService: protobuf in, domain calls, protobuf out, and nothing more.

Requests become plain values through `convert` and are checked by `validation`; each call is for
the tenant `auth.caller()` names, passed to the store with every read and write. The logic lives
in plain modules that never import `_pb2`: `submit` (SubmitTask's rules, `schemas` checking
payloads), `redrive` (RedriveTasks' rules) with `finished` (selecting finished tasks), `group`
(WatchTasks), `watch` (the watch state machine), `stats` (figures and percentiles), `kinds`
(ListKinds) and `store` (Redis). Domain errors become statuses in `errors.guard`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from taskcast.core import tracing
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.server import (
    convert,
    finished,
    group,
    kinds,
    metrics,
    redrive,
    submit,
    traces,
    validation,
    watchtokens,
)
from taskcast.server.auth import caller
from taskcast.server.config import ServerSettings
from taskcast.server.errors import guard
from taskcast.server.fanout import Fanout
from taskcast.server.store import ServerStore
from taskcast.server.watch import WatchSession
from taskcast.server.watchtokens import WatchTokens
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

Context = Any  # grpc.aio.ServicerContext; generic in the stubs, not at run time


class TaskService(pb_grpc.TaskServiceServicer):
    """The gRPC face of taskcast."""

    def __init__(self, store: ServerStore, fanout: Fanout, settings: ServerSettings) -> None:
        self.store = store
        self.fanout = fanout
        self.settings = settings
        self.tracer = tracing.setup("taskcast-server")  # None: tracing is off (core/tracing.py)
        self.watches = WatchSession(
            store, fanout, keepalive=settings.keepalive, max_watchers=settings.max_watchers
        )
        secret = settings.token_secret.encode()
        self.tokens = WatchTokens(_constant(secret) if secret else store.watch_token_key)

    @guard
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        new = await submit.new_task(convert.submit_from_pb(request), self.store, self.settings)
        new = submit.owned(new, caller())
        parent = traces.parent_of(context.invocation_metadata())
        record, created = await traces.submit(
            self.store, self.tracer, uuid.uuid4().hex, new, parent
        )
        if created:
            metrics.SUBMITTED.labels(record.kind, record.queue, record.tenant).inc()
        return pb.SubmitTaskResponse(task=convert.task_to_pb(record), created=created)

    @guard
    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Context
    ) -> pb.SubmitTasksResponse:
        outcomes = await submit.submit_many(
            [convert.submit_from_pb(t) for t in request.tasks],
            self.store,
            self.settings,
            self.tracer,
            traces.parent_of(context.invocation_metadata()),
            caller(),
        )
        for outcome in outcomes:
            if isinstance(outcome, tuple) and outcome[1]:
                record = outcome[0]
                metrics.SUBMITTED.labels(record.kind, record.queue, record.tenant).inc()
        return convert.submitted_to_pb(outcomes)

    @guard
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        _check_id(request.task_id)
        record = await self.store.get(request.task_id, caller().tenant)
        return pb.GetTaskResponse(task=convert.task_to_pb(record))

    @guard
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        p = validation.Problems()
        validation.task_id(request.task_id, p)
        validation.reason(request.reason, p)
        p.check()
        record = await self.store.cancel(
            request.task_id, request.reason or "cancelled by request", caller().tenant
        )
        return pb.CancelTaskResponse(task=convert.task_to_pb(record))

    @guard
    async def RetryTask(
        self, request: pb.RetryTaskRequest, context: Context
    ) -> pb.RetryTaskResponse:
        p = validation.Problems()
        validation.task_id(request.task_id, p)
        validation.idempotency_key(request.request_id, p, "request_id")
        p.check()
        record, retried = await self.store.retry(
            request.task_id, request.request_id, caller().tenant
        )
        return pb.RetryTaskResponse(task=convert.task_to_pb(record), retried=retried)

    @guard
    async def RedriveTasks(
        self, request: pb.RedriveTasksRequest, context: Context
    ) -> pb.RedriveTasksResponse:
        p = validation.Problems()
        r = convert.redrive_from_pb(request, p)
        f = replace(redrive.check(r, p), tenant=caller().tenant)
        p.check()
        if r.dry_run:
            selection = await finished.select(self.store, f, redrive.MAX_SELECTED)
            sample = selection.ids[: r.sample_size or redrive.DEFAULT_SAMPLE]
            return pb.RedriveTasksResponse(
                count=len(selection.ids), truncated=selection.truncated, sample_task_ids=sample
            )
        started = await redrive.start(self.store, f, r.max_per_second, r.request_id)
        return pb.RedriveTasksResponse(
            count=started.count,
            truncated=started.truncated,
            operation=convert.task_to_pb(started.operation),
            created=started.created,
        )

    @guard
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        p = validation.Problems()
        if request.kind:
            validation.kind(request.kind, p)
        validation.labels(dict(request.labels), p)
        if not 0 <= request.page_size <= 1000:
            p.add("page_size", "must be between 1 and 1000 (0: 50)")
        state = convert.state_from_pb(request.state, p)
        cursor = convert.cursor_from_token(request.page_token, p)
        p.check()
        tasks, nxt = await self.store.page(
            tenant=caller().tenant,
            state=state,
            kind=request.kind,
            labels=dict(request.labels),
            page_size=request.page_size or 50,
            cursor=cursor,
            payloads=request.include_payloads,
            max_bytes=self.settings.list_max_bytes,
        )
        return pb.ListTasksResponse(
            tasks=[convert.task_to_pb(t) for t in tasks],
            next_page_token=convert.cursor_to_token(nxt),
        )

    @guard
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        tenant = caller().tenant
        queues, kinds = await self.store.stats(tenant)
        return convert.stats_to_pb(
            queues,
            kinds,
            await self.store.workers(),
            watch_streams_open=self.watches.open,
            # Limit keys are shared by every tenant (a key names an upstream resource), and one
            # built from a payload is a tenant's data: only the default tenant's callers see them.
            limits=await self.store.limit_stats() if tenant == DEFAULT_TENANT else [],
            tenant=tenant,
        )

    @guard
    async def ListKinds(
        self, request: pb.ListKindsRequest, context: Context
    ) -> pb.ListKindsResponse:
        return pb.ListKindsResponse(
            kinds=[convert.kind_to_pb(k) for k in await kinds.listing(self.store)]
        )

    @guard
    async def CreateWatchToken(
        self, request: pb.CreateWatchTokenRequest, context: Context
    ) -> pb.CreateWatchTokenResponse:
        p = validation.Problems()
        validation.task_id(request.task_id, p)
        given = (request.ttl.seconds, request.ttl.nanos) if request.HasField("ttl") else None
        ttl = watchtokens.ttl_ms(validation.duration_ms(given, "ttl", p), p)
        p.check()
        tenant = caller().tenant  # NOT_FOUND: no token for a task that is not there (or not ours)
        await self.store.get(request.task_id, tenant)
        token, expires = await self.tokens.issue(request.task_id, ttl, request.allow_cancel, tenant)
        return pb.CreateWatchTokenResponse(token=token, expire_time=convert.ts(expires))

    @guard
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        _check_id(request.task_id)
        stream = self.watches.stream(request.task_id, request.after_sequence, caller().tenant)
        async for item in stream:
            yield convert.watch_item_to_pb(item)

    @guard
    async def WatchTasks(
        self, request: pb.WatchTasksRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        r = replace(convert.group_from_pb(request), tenant=caller().tenant)
        async for item in group.stream(self.watches, r):
            yield convert.watch_item_to_pb(item)


def _constant(key: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return key

    return load


def _check_id(task_id: str) -> None:
    p = validation.Problems()
    validation.task_id(task_id, p)
    p.check()
