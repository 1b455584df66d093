"""The synchronous client: a thin loop over the client core (`_requests`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, Unpack

import grpc

from taskcast.client import _requests
from taskcast.client._errors import DeadlineExceededError, translated
from taskcast.client._types import Event, Kind, Stats, Task
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

T = TypeVar("T")


class TaskHandle(_requests.Handle["TaskClient"]):
    """A submitted task: poll it, watch it, wait for it, cancel it."""

    def get(self) -> Task:
        """The task now. Raises NotFoundError once it expired."""
        self.task = self.client.get(self.id)
        return self.task

    def watch(
        self, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> Iterator[Event]:
        """Its events; see `TaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **options)

    def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `TaskClient.wait`."""
        return self.client.wait(self.id, timeout=timeout)

    def cancel(self, reason: str = "") -> Task:
        """Cancel it; see `TaskClient.cancel`."""
        return self.client.cancel(self.id, reason)


class TaskClient(_requests.Settings):
    """Talks to a taskcast server. Thread-safe; close it (or use `with`) when done.

    Args:
        address: host:port, or any gRPC target; default `TASKCAST_SERVER`, else 127.0.0.1:50051.
        timeout: Seconds each unary call may take (default 10).
        channel: A channel of your own (credentials, interceptors); `address` is then ignored.
        metadata: Sent with every call.
        token: Bearer token for a server that requires one (default: `TASKCAST_TOKEN`).
        reconnect_for: Seconds a watch keeps trying to resume before it raises UnavailableError.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        channel: grpc.Channel | None = None,
        metadata: list[tuple[str, str]] | None = None,
        reconnect_for: float = 60.0,
        token: str | None = None,
    ) -> None:
        super().__init__(address, timeout, metadata, reconnect_for, token)
        self._channel = channel or grpc.insecure_channel(self.address, _requests.CHANNEL_OPTIONS)
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._closed = True
        self._channel.close()

    def _call(self, call: _requests.Unary[T]) -> T:
        with translated():
            reply = getattr(self._stub, call.rpc)(
                call.request, timeout=self.timeout, metadata=self.metadata
            )
        return call.decode(reply)

    def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | str | None = None,
        **options: Unpack[_requests.SubmitOptions],
    ) -> TaskHandle:
        """Submit a task; returns once it is recorded and enqueued (milliseconds).

        Args:
            kind: A kind some worker serves, e.g. "demo.sleep".
            payload: A JSON-serialisable mapping, or JSON text sent as is.
            queue: Queue override (default: the kind's).
            labels: String labels to filter on in `list`.
            delay: Seconds (or timedelta) before the first attempt may start.
            not_before: Or an absolute time for it (timezone-aware).
            max_attempts: Attempts in all (default: the kind's).
            timeout: Time limit of one attempt (default: the kind's).
            idempotency_key: Same key + same request returns the original task. A fresh key is
                made when none is given, so the client's own retries never duplicate a task.

        Raises:
            InvalidArgumentError: Unknown kind, payload not a JSON object, too large or not
                matching the kind's schema (see `kinds`), bad labels.
            AlreadyExistsError: The key was used for a different request.
            UnavailableError: The server or Redis is down (after retries).
        """
        task = self._call(_requests.submit(kind, payload, **options))
        return TaskHandle(self, task.id, task)

    def handle(self, task_id: str) -> TaskHandle:
        """A handle for a task submitted earlier (no call is made)."""
        return TaskHandle(self, task_id)

    def get(self, task_id: str) -> Task:
        """The task now. Raises NotFoundError for an unknown or expired id."""
        return self._call(_requests.get(task_id))

    def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel: PENDING/RETRYING tasks at once; RUNNING ones are asked to stop.

        Raises:
            FailedPreconditionError: The task already finished.
            NotFoundError: Unknown id.
        """
        return self._call(_requests.cancel(task_id, reason))

    def kinds(self) -> list[Kind]:
        """The kinds workers registered, by name: queue, defaults, payload schema, served.

        `schema` is the JSON Schema `submit` checks payloads against (None: any JSON object);
        a payload that does not match is InvalidArgumentError, one violation per bad field.
        """
        return self._call(_requests.kinds())

    def list(self, **options: Unpack[_requests.ListOptions]) -> Iterator[Task]:
        """Tasks, newest first, fetched page by page as you iterate.

        Args:
            state: Only tasks in this state ("RUNNING").
            kind: Only tasks of this kind.
            labels: Only tasks with all these labels.
            limit: Stop after this many tasks (default: all).
            page_size: Tasks per call (1 to 1000, default 100); the server may send fewer per
                page, as it bounds a page by bytes too (1 MiB by default).
            include_payloads: Fill `payload` and `result` (default False: they are `{}` and
                None, as a payload may be 1 MiB; `get` reads one task in full).
        """
        pages = _requests.Pages(**options)
        while (call := pages.next()) is not None:
            yield from self._call(call)

    def stats(self) -> Stats:
        """Queue depths, running and dead counts; per kind counts and run times."""
        return self._call(_requests.stats())

    def watch(
        self, task_id: str, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> Iterator[Event]:
        """Every event after `after_sequence`, in order, until the terminal one.

        A broken stream (server restart, slow consumer, network) resumes by itself from the
        last sequence seen: no event is missed or repeated.

        Args:
            task_id: The task to watch.
            after_sequence: Events up to this sequence are skipped (0: all of them).
            keep_alives: Also yield the server's keep-alive events (default False).
            timeout: Seconds the whole watch may take, resumes included (default: no limit).

        Raises:
            NotFoundError: Unknown id.
            UnavailableError: The server stayed unreachable for `reconnect_for` seconds.
            DeadlineExceededError: `timeout` seconds passed.
        """
        watch = _requests.Watch(task_id, after_sequence, self.reconnect_for, **options)
        while True:
            stream = self._stub.WatchTask(
                watch.request(), timeout=watch.time_left(), metadata=self.metadata
            )
            try:
                for raw in stream:
                    if (event := watch.receive(raw)) is not None:
                        yield event
                return
            except grpc.RpcError as exc:
                time.sleep(watch.resume_after(exc, closed=self._closed))  # backoff
            finally:
                stream.cancel()

    def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result once it succeeds.

        Raises:
            TaskFailedError: It ended FAILED (`.error` says why).
            TaskCancelledError: It ended CANCELLED.
            WaitTimeoutError: `timeout` seconds passed first (the task goes on).
        """
        try:
            for event in self.watch(task_id, timeout=timeout):
                if event.terminal:
                    break
        except DeadlineExceededError as exc:
            raise _requests.wait_timeout(task_id, timeout) from exc
        return _requests.outcome(self.get(task_id))
