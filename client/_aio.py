"""The asyncio client: the same methods as TaskClient, awaited."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
import grpc.aio

from taskcast.client import _requests
from taskcast.client._client import _outcome
from taskcast.client._errors import (
    RESUMABLE,
    UnavailableError,
    WaitTimeoutError,
    from_grpc,
    retry_delay,
)
from taskcast.client._types import Event, Stats, Task
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc) from exc


class AsyncTaskHandle:
    """A submitted task, for asyncio code."""

    def __init__(self, client: AsyncTaskClient, task_id: str, task: Task | None = None) -> None:
        self.client = client
        self.id = task_id
        self.task = task

    def __repr__(self) -> str:
        return f"AsyncTaskHandle({self.id!r})"

    async def get(self) -> Task:
        """The task now."""
        self.task = await self.client.get(self.id)
        return self.task

    def watch(self, after_sequence: int = 0, **kwargs: Any) -> AsyncIterator[Event]:
        """Its events; see `AsyncTaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **kwargs)

    async def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `AsyncTaskClient.wait`."""
        return await self.client.wait(self.id, timeout=timeout)

    async def cancel(self, reason: str = "") -> Task:
        """Cancel it."""
        return await self.client.cancel(self.id, reason)


class AsyncTaskClient:
    """The asyncio twin of `TaskClient` (same arguments, same exceptions).

    Create it inside the event loop that uses it; `async with` closes it.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        channel: grpc.aio.Channel | None = None,
        metadata: list[tuple[str, str]] | None = None,
        reconnect_for: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.address = _requests.server_address(address)
        self._channel = channel or grpc.aio.insecure_channel(
            self.address, options=_requests.CHANNEL_OPTIONS
        )
        self._stub = pb_grpc.TaskServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = _requests.call_metadata(metadata, token)
        self.reconnect_for = reconnect_for
        self._closed = False

    async def __aenter__(self) -> AsyncTaskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        self._closed = True
        await self._channel.close()

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | str | None = None,
        *,
        queue: str | None = None,
        labels: Mapping[str, str] | None = None,
        delay: float | dt.timedelta | None = None,
        not_before: dt.datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | dt.timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTaskHandle:
        """Submit a task; see `TaskClient.submit`."""
        req = _requests.submit_request(
            kind,
            payload,
            queue=queue,
            labels=labels,
            delay=delay,
            not_before=not_before,
            max_attempts=max_attempts,
            timeout=timeout,
            idempotency_key=idempotency_key,
        )
        with _translated():
            resp = await self._stub.SubmitTask(req, timeout=self.timeout, metadata=self.metadata)
        return AsyncTaskHandle(self, resp.task.id, Task.from_pb(resp.task))

    def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle for a task submitted earlier (no call is made)."""
        return AsyncTaskHandle(self, task_id)

    async def get(self, task_id: str) -> Task:
        """The task now; see `TaskClient.get`."""
        with _translated():
            resp = await self._stub.GetTask(
                pb.GetTaskRequest(task_id=task_id), timeout=self.timeout, metadata=self.metadata
            )
        return Task.from_pb(resp.task)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel; see `TaskClient.cancel`."""
        with _translated():
            resp = await self._stub.CancelTask(
                pb.CancelTaskRequest(task_id=task_id, reason=reason),
                timeout=self.timeout,
                metadata=self.metadata,
            )
        return Task.from_pb(resp.task)

    async def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = 100,
        include_payloads: bool = False,
    ) -> AsyncIterator[Task]:
        """Tasks, newest first, page by page; see `TaskClient.list`."""
        page_token, seen = "", 0
        while True:
            req = _requests.list_request(
                state, kind, labels, page_size, page_token, include_payloads
            )
            with _translated():
                resp = await self._stub.ListTasks(req, timeout=self.timeout, metadata=self.metadata)
            for t in resp.tasks:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Task.from_pb(t)
            page_token = resp.next_page_token
            if not page_token:
                return

    async def stats(self) -> Stats:
        """See `TaskClient.stats`."""
        with _translated():
            return Stats.from_pb(
                await self._stub.GetStats(
                    pb.GetStatsRequest(), timeout=self.timeout, metadata=self.metadata
                )
            )

    async def watch(
        self, task_id: str, after_sequence: int = 0, *, keep_alives: bool = False
    ) -> AsyncIterator[Event]:
        """Every event after `after_sequence`, resuming by itself; see `TaskClient.watch`.

        Bound it in time with `asyncio.timeout()`.
        """
        last, policy = after_sequence, _requests.Reconnect(self.reconnect_for)
        while True:
            call = self._stub.WatchTask(
                pb.WatchTaskRequest(task_id=task_id, after_sequence=last), metadata=self.metadata
            )
            try:
                async for raw in call:
                    policy.ok()
                    event = Event.from_pb(raw)
                    if raw.sequence:
                        last = raw.sequence
                    elif not keep_alives and event.type == "keep_alive":
                        continue
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                err = from_grpc(exc)
                # CANCELLED also comes from grpc-core refusing a burst of new streams; the one
                # from this client's own close() must not be retried.
                if exc.code() not in RESUMABLE or self._closed:
                    raise err from exc
                delay = policy.next_delay(retry_delay(err))
                if delay is None:
                    raise UnavailableError(
                        exc.code(),
                        f"gave up resuming the watch of {task_id} "
                        f"after {self.reconnect_for:.0f}s: {exc.details()}",
                    ) from exc
                await asyncio.sleep(delay)  # backoff between reconnects
            finally:
                call.cancel()

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; see `TaskClient.wait`."""
        try:
            async with asyncio.timeout(timeout):
                async for event in self.watch(task_id):
                    if event.terminal:
                        break
        except TimeoutError as exc:
            raise WaitTimeoutError(f"task {task_id} not finished after {timeout}s") from exc
        return _outcome(await self.get(task_id))
