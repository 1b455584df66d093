"""The asyncio client: the same methods as TaskClient, awaited; a thin loop over `_requests`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio

from taskcast.client import _requests
from taskcast.client._errors import DeadlineExceededError, translated
from taskcast.client._types import Event, Kind, Stats, Task
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncTaskHandle(_requests.Handle["AsyncTaskClient"]):
    """A submitted task, for asyncio code."""

    async def get(self) -> Task:
        """The task now."""
        self.task = await self.client.get(self.id)
        return self.task

    def watch(
        self, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> AsyncIterator[Event]:
        """Its events; see `AsyncTaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **options)

    async def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `AsyncTaskClient.wait`."""
        return await self.client.wait(self.id, timeout=timeout)

    async def cancel(self, reason: str = "") -> Task:
        """Cancel it."""
        return await self.client.cancel(self.id, reason)


class AsyncTaskClient(_requests.Settings):
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
        super().__init__(address, timeout, metadata, reconnect_for, token)
        self._channel = channel or grpc.aio.insecure_channel(
            self.address, options=_requests.CHANNEL_OPTIONS
        )
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    async def __aenter__(self) -> AsyncTaskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        self._closed = True
        await self._channel.close()

    async def _call(self, call: _requests.Unary[T]) -> T:
        with translated():
            reply = await getattr(self._stub, call.rpc)(
                call.request, timeout=self.timeout, metadata=self.metadata
            )
        return call.decode(reply)

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | str | None = None,
        **options: Unpack[_requests.SubmitOptions],
    ) -> AsyncTaskHandle:
        """Submit a task; see `TaskClient.submit`."""
        task = await self._call(_requests.submit(kind, payload, **options))
        return AsyncTaskHandle(self, task.id, task)

    def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle for a task submitted earlier (no call is made)."""
        return AsyncTaskHandle(self, task_id)

    async def get(self, task_id: str) -> Task:
        """The task now; see `TaskClient.get`."""
        return await self._call(_requests.get(task_id))

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel; see `TaskClient.cancel`."""
        return await self._call(_requests.cancel(task_id, reason))

    async def kinds(self) -> list[Kind]:
        """The kinds workers registered; see `TaskClient.kinds`."""
        return await self._call(_requests.kinds())

    async def list(self, **options: Unpack[_requests.ListOptions]) -> AsyncIterator[Task]:
        """Tasks, newest first, page by page; see `TaskClient.list`."""
        pages = _requests.Pages(**options)
        while (call := pages.next()) is not None:
            for task in await self._call(call):
                yield task

    async def stats(self) -> Stats:
        """See `TaskClient.stats`."""
        return await self._call(_requests.stats())

    async def watch(
        self, task_id: str, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> AsyncIterator[Event]:
        """Every event after `after_sequence`, resuming by itself; see `TaskClient.watch`."""
        watch = _requests.Watch(task_id, after_sequence, self.reconnect_for, **options)
        while True:
            stream = self._stub.WatchTask(
                watch.request(), timeout=watch.time_left(), metadata=self.metadata
            )
            try:
                async for raw in stream:
                    if (event := watch.receive(raw)) is not None:
                        yield event
                return
            except grpc.RpcError as exc:
                await asyncio.sleep(watch.resume_after(exc, closed=self._closed))  # backoff
            finally:
                stream.cancel()

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; see `TaskClient.wait`."""
        try:
            async for event in self.watch(task_id, timeout=timeout):
                if event.terminal:
                    break
        except DeadlineExceededError as exc:
            raise _requests.wait_timeout(task_id, timeout) from exc
        return _requests.outcome(await self.get(task_id))
