"""TaskService: protobuf in, domain calls, protobuf out. The logic lives in store and fanout."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import timestamp_pb2

from taskcast.server import convert, submit, validation
from taskcast.server.config import ServerSettings
from taskcast.server.errors import InvalidArgument, ResourceExhausted, Unavailable, guard
from taskcast.server.fanout import RESYNC, SHUTDOWN, Fanout
from taskcast.server.store import ServerStore
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

Context = Any  # grpc.aio.ServicerContext; generic in the stubs, not at run time


class TaskService(pb_grpc.TaskServiceServicer):
    """The gRPC face of taskcast."""

    def __init__(self, store: ServerStore, fanout: Fanout, settings: ServerSettings) -> None:
        self.store = store
        self.fanout = fanout
        self.settings = settings

    @guard
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        new = await submit.new_task(convert.submit_from_pb(request), self.store, self.settings)
        record, created = await self.store.submit(uuid.uuid4().hex, new)
        return pb.SubmitTaskResponse(task=convert.task_to_pb(record), created=created)

    @guard
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        _check_id(request.task_id)
        return pb.GetTaskResponse(task=convert.task_to_pb(await self.store.get(request.task_id)))

    @guard
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        _check_id(request.task_id)
        if len(request.reason) > 1024:
            raise InvalidArgument([("reason", "must be at most 1024 characters")])
        record = await self.store.cancel(request.task_id, request.reason or "cancelled by request")
        return pb.CancelTaskResponse(task=convert.task_to_pb(record))

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
        if request.state not in pb.TaskState.values():
            p.add("state", f"unknown state {request.state}")
        cursor = _decode_token(request.page_token, p)
        p.check()
        tasks, nxt = await self.store.page(
            state=convert.state_from_pb(request.state),
            kind=request.kind,
            labels=dict(request.labels),
            page_size=request.page_size or 50,
            cursor=cursor,
            payloads=request.include_payloads,
            max_bytes=self.settings.list_max_bytes,
        )
        return pb.ListTasksResponse(
            tasks=[convert.task_to_pb(t) for t in tasks], next_page_token=_encode_token(nxt)
        )

    @guard
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        queues, kinds = await self.store.stats()
        workers = await self.store.workers()
        out = pb.GetStatsResponse(
            queues=[convert.queue_stats_to_pb(q, workers) for q in queues],
            workers=[convert.worker_to_pb(w) for w in workers],
        )
        for k in kinds:
            samples, counts = k["samples"], {s.value.lower(): n for s, n in k["counts"].items()}
            ks = pb.KindStats(kind=k["kind"], run_time_samples=len(samples), **counts)
            if samples:
                for field, q in (
                    ("run_time_p50", 0.5),
                    ("run_time_p90", 0.9),
                    ("run_time_p99", 0.99),
                ):
                    getattr(ks, field).FromMilliseconds(
                        samples[min(len(samples) - 1, int(q * len(samples)))]
                    )
            out.kinds.append(ks)
        return out

    @guard
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        _check_id(request.task_id)
        if request.after_sequence < 0:
            raise InvalidArgument([("after_sequence", "must be 0 or more")])
        if self.fanout.count >= self.settings.max_watchers:
            raise ResourceExhausted(
                f"this server already has {self.fanout.count} watchers; "
                "retry later or use another replica",
                retry_after=1.0,
            )
        task = await self.store.get(request.task_id)  # NOT_FOUND before the stream starts
        if request.after_sequence > task.last_sequence:
            # Sequences only come from events this task emitted: a larger cursor would skip
            # events (the terminal one too) and wait for ever, so it is refused at once.
            raise InvalidArgument(
                [
                    (
                        "after_sequence",
                        f"is past the task's last event ({task.last_sequence}); use 0 or a "
                        "sequence this task's events carried",
                    )
                ]
            )
        with self.fanout.watch(request.task_id) as inbox:
            async for event in self._stream(request.task_id, request.after_sequence, inbox):
                yield event

    async def _stream(self, task_id: str, last: int, inbox: Any) -> AsyncIterator[pb.TaskEvent]:
        """Replay, then live events; re-read the stream whenever the live feed may have a gap."""
        catch_up = True
        while True:
            if catch_up:
                catch_up = False
                async for event in self._replay(task_id, last):
                    yield event
                    if event.sequence:
                        last = event.sequence
                    if event.HasField("state_changed") and _terminal(event):
                        return
                mark = await self.store.mark(task_id)
                if mark is None or (mark[0].terminal and mark[1] <= last):
                    return  # expired under us, or the caller has seen the end already
            try:
                async with asyncio.timeout(self.settings.keepalive):  # no Task per wait
                    item = await inbox.queue.get()
            except TimeoutError:
                # Idle: a cheap check that nothing was missed, else a keep-alive.
                mark = await self.store.mark(task_id)
                if mark is None or (mark[0].terminal and mark[1] <= last):
                    return  # expired, or finished with nothing left to send
                if mark[1] > last:
                    catch_up = True
                else:
                    now = timestamp_pb2.Timestamp()
                    now.GetCurrentTime()
                    yield convert.keep_alive(task_id, now)
                continue
            if item == SHUTDOWN:
                raise Unavailable(
                    "server shutting down; watch again with after_sequence = the last sequence "
                    "you received",
                    0.1,
                )
            if inbox.overflowed:
                raise ResourceExhausted(
                    "watcher fell behind the live events; watch again with after_sequence = the "
                    "last sequence you received",
                    0.1,
                )
            if item == RESYNC:
                catch_up = True
                continue
            if item.sequence <= last:
                if item.terminal:
                    return  # the end, at or before the cursor
                continue  # already sent during replay
            if item.sequence > last + 1:
                catch_up = True  # a gap in the live feed: the stream has the missing events
                continue
            last = item.sequence
            yield convert.event_to_pb(item)
            if item.terminal:
                return

    async def _replay(self, task_id: str, last: int) -> AsyncIterator[pb.TaskEvent]:
        first = True
        async for record in self.store.events_after(task_id, last):
            if first and record.sequence > last + 1:
                yield convert.trimmed(task_id, record.sequence)
            first = False
            yield convert.event_to_pb(record)


def _terminal(event: pb.TaskEvent) -> bool:
    return event.state_changed.state in (
        pb.TASK_STATE_SUCCEEDED,
        pb.TASK_STATE_FAILED,
        pb.TASK_STATE_CANCELLED,
    )


def _check_id(task_id: str) -> None:
    p = validation.Problems()
    validation.task_id(task_id, p)
    p.check()


def _encode_token(cursor: tuple[int, str] | None) -> str:
    if cursor is None:
        return ""
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode()


def _decode_token(token: str, p: validation.Problems) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        score, _, member = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        return int(score), member
    except (ValueError, binascii.Error, UnicodeDecodeError):
        p.add("page_token", "is not a token this server issued; start again without one")
        return None
