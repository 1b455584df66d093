"""The synchronous client."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from taskcast.client import _requests
from taskcast.client._errors import (
    RESUMABLE,
    DeadlineExceededError,
    TaskCancelledError,
    TaskFailedError,
    UnavailableError,
    WaitTimeoutError,
    from_grpc,
    retry_delay,
)
from taskcast.client._types import Event, Stats, Task, TaskState
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as exc:
        raise from_grpc(exc) from exc


class TaskHandle:
    """A submitted task: poll it, watch it, wait for it, cancel it."""

    def __init__(self, client: TaskClient, task_id: str, task: Task | None = None) -> None:
        self.client = client
        self.id = task_id
        self.task = task  #: the task as last seen, if any

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    def get(self) -> Task:
        """The task now. Raises NotFoundError once it expired."""
        self.task = self.client.get(self.id)
        return self.task

    def watch(self, after_sequence: int = 0, **kwargs: Any) -> Iterator[Event]:
        """Its events; see `TaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **kwargs)

    def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `TaskClient.wait`."""
        return self.client.wait(self.id, timeout=timeout)

    def cancel(self, reason: str = "") -> Task:
        """Cancel it; see `TaskClient.cancel`."""
        return self.client.cancel(self.id, reason)


class TaskClient:
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
        self.address = _requests.server_address(address)
        self._channel = channel or grpc.insecure_channel(self.address, _requests.CHANNEL_OPTIONS)
        self._stub = pb_grpc.TaskServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = _requests.call_metadata(metadata, token)
        self.reconnect_for = reconnect_for
        self._closed = False

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._closed = True
        self._channel.close()

    def submit(
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
            InvalidArgumentError: Unknown kind, payload not a JSON object or too large, bad labels.
            AlreadyExistsError: The key was used for a different request.
            UnavailableError: The server or Redis is down (after retries).
        """
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
            resp = self._stub.SubmitTask(req, timeout=self.timeout, metadata=self.metadata)
        return TaskHandle(self, resp.task.id, Task.from_pb(resp.task))

    def handle(self, task_id: str) -> TaskHandle:
        """A handle for a task submitted earlier (no call is made)."""
        return TaskHandle(self, task_id)

    def get(self, task_id: str) -> Task:
        """The task now. Raises NotFoundError for an unknown or expired id."""
        with _translated():
            resp = self._stub.GetTask(
                pb.GetTaskRequest(task_id=task_id), timeout=self.timeout, metadata=self.metadata
            )
        return Task.from_pb(resp.task)

    def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel: PENDING/RETRYING tasks at once; RUNNING ones are asked to stop.

        Raises:
            FailedPreconditionError: The task already finished.
            NotFoundError: Unknown id.
        """
        with _translated():
            resp = self._stub.CancelTask(
                pb.CancelTaskRequest(task_id=task_id, reason=reason),
                timeout=self.timeout,
                metadata=self.metadata,
            )
        return Task.from_pb(resp.task)

    def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = 100,
        include_payloads: bool = False,
    ) -> Iterator[Task]:
        """Tasks, newest first, fetched page by page as you iterate.

        Args:
            state: Only tasks in this state ("RUNNING").
            kind: Only tasks of this kind.
            labels: Only tasks with all these labels.
            limit: Stop after this many tasks (default: all).
            page_size: Tasks per call (1 to 1000); the server may send fewer per page, as it
                bounds a page by bytes too (1 MiB by default).
            include_payloads: Fill `payload` and `result` (default False: they are `{}` and
                None, as a payload may be 1 MiB; `get` reads one task in full).
        """
        page_token, seen = "", 0
        while True:
            req = _requests.list_request(
                state, kind, labels, page_size, page_token, include_payloads
            )
            with _translated():
                resp = self._stub.ListTasks(req, timeout=self.timeout, metadata=self.metadata)
            for t in resp.tasks:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Task.from_pb(t)
            page_token = resp.next_page_token
            if not page_token:
                return

    def stats(self) -> Stats:
        """Queue depths, running and dead counts; per kind counts and run times."""
        with _translated():
            return Stats.from_pb(
                self._stub.GetStats(
                    pb.GetStatsRequest(), timeout=self.timeout, metadata=self.metadata
                )
            )

    def watch(
        self,
        task_id: str,
        after_sequence: int = 0,
        *,
        keep_alives: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Every event after `after_sequence`, in order, until the terminal one.

        A broken stream (server restart, slow consumer, network) resumes by itself from the
        last sequence seen: no event is missed or repeated.

        Raises:
            NotFoundError: Unknown id.
            UnavailableError: The server stayed unreachable for `reconnect_for` seconds.
            DeadlineExceededError: `timeout` seconds passed.
        """
        last, policy = after_sequence, _requests.Reconnect(self.reconnect_for)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            call = self._stub.WatchTask(
                pb.WatchTaskRequest(task_id=task_id, after_sequence=last),
                timeout=left,
                metadata=self.metadata,
            )
            try:
                for raw in call:
                    policy.ok()
                    event = Event.from_pb(raw)
                    if raw.sequence:
                        last = raw.sequence
                    elif not keep_alives and event.type == "keep_alive":
                        continue
                    yield event
                return
            except grpc.RpcError as exc:
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
                time.sleep(delay)  # backoff between reconnects
            finally:
                call.cancel()

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
            raise WaitTimeoutError(f"task {task_id} not finished after {timeout}s") from exc
        return _outcome(self.get(task_id))


def _outcome(task: Task) -> Any:
    if task.state is TaskState.SUCCEEDED:
        return task.result
    if task.state is TaskState.CANCELLED:
        raise TaskCancelledError(task)
    if task.state is TaskState.FAILED:
        raise TaskFailedError(task)
    raise WaitTimeoutError(f"task {task.id} ended its stream in state {task.state}")
