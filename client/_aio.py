"""The asyncio client: the same methods as TaskClient, awaited; a thin loop over `_requests`."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio

from taskcast.client import _batch, _group, _requests, _tls
from taskcast.client._errors import DeadlineExceededError, RpcError, WrongLoopError, translated
from taskcast.client._types import Event, Kind, Redrive, Stats, Task
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncEventStream(AsyncIterator[Event]):
    """The events of one `watch`, for asyncio: iterate it; closing it cancels its call at once.

    `async with client.watch(task_id) as events:` closes it when the block is left, however
    it is left; a task cancelled while it waits for the next event cancels the call too.
    """

    def __init__(self, client: AsyncTaskClient, watch: _requests.Watch) -> None:
        self._client = client
        self._watch = watch
        self._call: Any = None  # the open WatchTask call; None before it and between resumes
        self._closed = False

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the call and end the iteration (calling it again does nothing)."""
        self._cancel()

    def _cancel(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __anext__(self) -> Event:
        while not self._closed:
            if self._call is None:
                self._call = self._client._open(self._watch)
            try:
                raw = await self._call.read()
            except grpc.RpcError as exc:
                self._call = None
                await self._backoff(exc)
                continue
            except asyncio.CancelledError:
                self._cancel()  # the reader went away: free the server's slot now
                raise
            if raw is grpc.aio.EOF:
                self._cancel()  # the task's stream ended after its terminal event
                break
            if (event := self._watch.receive(raw)) is not None:
                return event
        raise StopAsyncIteration

    async def _backoff(self, exc: grpc.RpcError) -> None:
        if self._closed:
            return  # our own cancel: the iteration ends quietly
        try:
            delay = self._watch.resume_after(exc, closed=self._client._closed)
        except BaseException:
            self._closed = True
            raise
        await asyncio.sleep(delay)


class AsyncTaskHandle(_requests.Handle["AsyncTaskClient"]):
    """A submitted task, for asyncio code."""

    async def get(self) -> Task:
        """The task now."""
        self.task = await self.client.get(self.id)
        return self.task

    def watch(
        self, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> AsyncEventStream:
        """Its events; see `AsyncTaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **options)

    async def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `AsyncTaskClient.wait`."""
        return await self.client.wait(self.id, timeout=timeout)

    async def cancel(self, reason: str = "") -> Task:
        """Cancel it."""
        return await self.client.cancel(self.id, reason)

    async def retry(self, request_id: str | None = None) -> Task:
        """Run it again."""
        return await self.client.retry(self.id, request_id)


class AsyncTaskClient(_requests.Settings):
    """The asyncio twin of `TaskClient` (same arguments, same exceptions).

    It may be created anywhere, at import time too: its channel is made on first use, in the
    running event loop, and every later call must come from that same loop (a grpc.aio channel
    is bound to one); another loop gets `WrongLoopError` at once. `async with` closes it.
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
        tls: bool | None = None,
        tls_ca: _tls.PathLike | None = None,
        tls_cert: _tls.PathLike | None = None,
        tls_key: _tls.PathLike | None = None,
    ) -> None:
        super().__init__(address, timeout, metadata, reconnect_for, token)
        # Checked now (a bad option fails here), used when the channel is made.
        self._creds = None if channel else _tls.credentials(tls, tls_ca, tls_cert, tls_key)
        # Made on first use, inside a running loop: made here, at import time, it bound itself
        # to another loop and every call failed with a raw "attached to a different loop".
        self._channel = channel
        self._stub_now = None if channel is None else pb_grpc.TaskServiceStub(channel)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def _stub(self) -> Any:
        """The stub, its channel made in the running loop the first time."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise WrongLoopError(
                "this AsyncTaskClient was first used in another event loop, and a grpc.aio "
                "channel works in one loop only: make one client per loop (in FastAPI, in "
                "the lifespan function) or close this one and make a new one"
            )
        if self._stub_now is None:
            options = _requests.CHANNEL_OPTIONS
            self._channel = (
                grpc.aio.insecure_channel(self.address, options=options)
                if self._creds is None
                else grpc.aio.secure_channel(self.address, self._creds, options=options)
            )
            self._stub_now = pb_grpc.TaskServiceStub(self._channel)
        return self._stub_now

    async def __aenter__(self) -> AsyncTaskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close()

    async def _call(self, call: _requests.Unary[T]) -> T:
        with translated():
            reply = await getattr(self._stub, call.rpc)(
                call.request, timeout=self.timeout, metadata=self.metadata_for(call.rpc)
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

    async def submit_many(self, items: Iterable[_batch.Item]) -> list[AsyncTaskHandle | RpcError]:
        """Submit many tasks in few calls; see `TaskClient.submit_many`."""
        out: list[AsyncTaskHandle | RpcError] = []
        for call, n in _batch.calls(items):
            try:
                results = await self._call(call)
            except RpcError as exc:
                results = [exc] * n
            out += [
                r if isinstance(r, RpcError) else AsyncTaskHandle(self, r.id, r) for r in results
            ]
        return out

    def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle for a task submitted earlier (no call is made)."""
        return AsyncTaskHandle(self, task_id)

    async def get(self, task_id: str) -> Task:
        """The task now; see `TaskClient.get`."""
        return await self._call(_requests.get(task_id))

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel; see `TaskClient.cancel`."""
        return await self._call(_requests.cancel(task_id, reason))

    async def watch_token(
        self, task_id: str, ttl: float | dt.timedelta = 900.0, cancel: bool = False
    ) -> str:
        """A token for a browser to watch one task; see `TaskClient.watch_token`."""
        return await self._call(_requests.watch_token(task_id, ttl, cancel))

    async def kinds(self) -> list[Kind]:
        """The kinds workers registered; see `TaskClient.kinds`."""
        return await self._call(_requests.kinds())

    async def retry(self, task_id: str, request_id: str | None = None) -> Task:
        """Run a FAILED or CANCELLED task again; see `TaskClient.retry`."""
        return await self._call(_requests.retry(task_id, request_id))

    async def redrive(self, **options: Unpack[_requests.RedriveOptions]) -> Redrive:
        """Retry the FAILED or CANCELLED tasks a filter selects; see `TaskClient.redrive`."""
        return await self._call(_requests.redrive(**options))

    async def list(self, **options: Unpack[_requests.ListOptions]) -> AsyncIterator[Task]:
        """Tasks, newest first, page by page; see `TaskClient.list`."""
        pages = _requests.Pages(**options)
        while (call := pages.next()) is not None:
            for task in await self._call(call):
                yield task

    async def stats(self) -> Stats:
        """See `TaskClient.stats`."""
        return await self._call(_requests.stats())

    def watch(
        self, task_id: str, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> AsyncEventStream:
        """Every event after `after_sequence`, resuming by itself; see `TaskClient.watch`.

        Use `async with client.watch(task_id) as events:` (then `async for event in events`),
        so the call is cancelled the moment the block is left.
        """
        return AsyncEventStream(
            self, _requests.Watch(task_id, after_sequence, self.reconnect_for, **options)
        )

    def watch_group(
        self,
        label: str,
        cursors: Mapping[str, int] | None = None,
        *,
        end_when_done: bool = False,
        **options: Unpack[_requests.WatchOptions],
    ) -> AsyncEventStream:
        """The events of every task carrying `label`; see `TaskClient.watch_group`."""
        watch = _group.GroupWatch(label, cursors, end_when_done, self.reconnect_for, **options)
        return AsyncEventStream(self, watch)

    def _open(self, watch: _requests.Watch) -> Any:
        """Open (or reopen) the streaming call `watch` asks for."""
        return getattr(self._stub, watch.rpc)(
            watch.request(), timeout=watch.time_left(), metadata=self.metadata
        )

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; see `TaskClient.wait`."""
        last: Event | None = None
        try:
            async with self.watch(task_id, timeout=timeout) as events:
                async for event in events:  # to the stream's end (see TaskClient.wait)
                    last = event
        except DeadlineExceededError as exc:
            raise _requests.wait_timeout(task_id, timeout) from exc
        if _requests.succeeded(last):
            return last.result
        return _requests.outcome(await self.get(task_id))
