"""The synchronous client: a thin loop over the client core (`_requests`)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, Unpack

import grpc

from taskcast.client import _batch, _group, _requests, _tls
from taskcast.client._errors import DeadlineExceededError, RpcError, translated
from taskcast.client._types import Event, Kind, Redrive, Stats, Task
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

T = TypeVar("T")


class EventStream(Iterator[Event]):
    """The events of one `watch` (or `watch_group`): iterate it; closing it cancels its gRPC
    call at once.

    `with client.watch(task_id) as events:` closes it when the block is left, however it is
    left, so the server's watcher slot is freed then, not when garbage collection runs.
    `close()` may be called from any thread: an iteration blocked waiting for the next event
    then ends (StopIteration) instead of waiting for it.
    """

    def __init__(self, client: TaskClient, watch: _requests.Watch) -> None:
        self._client = client
        self._watch = watch
        self._call: Any = None  # the open WatchTask call; None before it and between resumes
        self._closed = threading.Event()  # also what a resume's backoff waits on

    def __iter__(self) -> EventStream:
        return self

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the call and end the iteration (any thread; calling it again does nothing)."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()

    def __next__(self) -> Event:
        while not self._closed.is_set():
            if self._call is None:
                self._call = self._client._open(self._watch)
                if self._closed.is_set():  # closed by another thread while it opened
                    self._call.cancel()
            try:
                raw = next(self._call)
            except StopIteration:
                self.close()  # the task's stream ended after its terminal event
                raise
            except grpc.RpcError as exc:
                self._call = None
                self._backoff(exc)
                continue
            if (event := self._watch.receive(raw)) is not None:
                return event
        raise StopIteration

    def _backoff(self, exc: grpc.RpcError) -> None:
        if self._closed.is_set():
            return  # our own cancel: the iteration ends quietly
        try:
            delay = self._watch.resume_after(exc, closed=self._client._closed)
        except BaseException:
            self._closed.set()
            raise
        self._closed.wait(delay)  # close() cuts the wait short


class TaskHandle(_requests.Handle["TaskClient"]):
    """A submitted task: poll it, watch it, wait for it, cancel it, retry it."""

    def get(self) -> Task:
        """The task now. Raises NotFoundError once it expired."""
        self.task = self.client.get(self.id)
        return self.task

    def watch(
        self, after_sequence: int = 0, **options: Unpack[_requests.WatchOptions]
    ) -> EventStream:
        """Its events; see `TaskClient.watch`."""
        return self.client.watch(self.id, after_sequence, **options)

    def wait(self, timeout: float | None = None) -> Any:
        """Its result; see `TaskClient.wait`."""
        return self.client.wait(self.id, timeout=timeout)

    def cancel(self, reason: str = "") -> Task:
        """Cancel it; see `TaskClient.cancel`."""
        return self.client.cancel(self.id, reason)

    def retry(self, request_id: str | None = None) -> Task:
        """Run it again; see `TaskClient.retry`."""
        return self.client.retry(self.id, request_id)


class TaskClient(_requests.Settings):
    """Talks to a taskcast server. Thread-safe; close it (or use `with`) when done.

    Args:
        address: host:port, or any gRPC target; default `TASKCAST_SERVER`, else 127.0.0.1:50051.
        timeout: Seconds each unary call may take (default 10).
        channel: A channel of your own (credentials, interceptors); `address` is then ignored.
        metadata: Sent with every call.
        token: Bearer token for a server that requires one (default: `TASKCAST_TOKEN`).
        reconnect_for: Seconds a watch keeps trying to resume before it raises UnavailableError.
        tls: True for TLS verified against the system's roots (default: `TASKCAST_TLS`); False
            for plaintext whatever the environment says. Any `tls_*` option implies TLS.
        tls_ca: PEM CA bundle that signed the server's certificate, instead of the system's
            roots (default: `TASKCAST_TLS_CA`).
        tls_cert: PEM certificate chain to present to a server that requires one (mTLS)
            (default: `TASKCAST_TLS_CLIENT_CERT`).
        tls_key: The private key of `tls_cert` (default: `TASKCAST_TLS_CLIENT_KEY`).

    Raises:
        ValueError: `tls_cert` without `tls_key` (or the reverse), or a file that is not PEM.
        OSError: A TLS file cannot be read.
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
        tls: bool | None = None,
        tls_ca: _tls.PathLike | None = None,
        tls_cert: _tls.PathLike | None = None,
        tls_key: _tls.PathLike | None = None,
    ) -> None:
        super().__init__(address, timeout, metadata, reconnect_for, token)
        creds = None if channel else _tls.credentials(tls, tls_ca, tls_cert, tls_key)
        self._channel = channel or (
            grpc.insecure_channel(self.address, _requests.CHANNEL_OPTIONS)
            if creds is None
            else grpc.secure_channel(self.address, creds, _requests.CHANNEL_OPTIONS)
        )
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
                call.request, timeout=self.timeout, metadata=self.metadata_for(call.rpc)
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
                At most 256 printable characters, not starting with `taskcast.` (taskcast's own).
            concurrency_key: With `concurrency_limit`: at most that many attempts of tasks naming
                this key run at once, across all workers (replaces the kind's concurrency
                limit). Key 1-128 bytes; limit 1 to 10,000.
            concurrency_limit: See `concurrency_key`.
            priority: 1 (starts first) to 5 (last); default 3. Among the tasks ready on a
                queue, a lower number starts first, however old the others are.
            fairness_key: Shares your tasks' starts among keys (an end customer, a document
                set), round-robin: one key's burst cannot starve another's trickle.
            fairness_weight: The key's share against your other keys (0.01 to 100; 1).

        Raises:
            InvalidArgumentError: Unknown kind, payload not a JSON object, too large or not
                matching the kind's schema (see `kinds`), bad labels.
            AlreadyExistsError: The key was used for a different request.
            UnavailableError: The server or Redis is down (after retries).
        """
        task = self._call(_requests.submit(kind, payload, **options))
        return TaskHandle(self, task.id, task)

    def submit_many(self, items: Iterable[_batch.Item]) -> list[TaskHandle | RpcError]:
        """Submit many tasks in few calls (SubmitTasks): each item is its own submit, recorded
        and enqueued on its own, and one bad item never fails the others.

        Args:
            items: `TaskSpec`s, or mappings with the same keys (`kind`, `payload`, `queue`,
                `labels`, `delay`, `not_before`, `max_attempts`, `timeout`,
                `idempotency_key`, `concurrency_key`, `concurrency_limit`, `priority`,
                `fairness_key`, `fairness_weight`: the arguments of `submit`). An item without
                a key gets a fresh one, as in `submit`: give your own keys to make calling
                `submit_many` again after a failure safe.

        Returns:
            One result per item, in order: its handle (`.task` set; an idempotent repeat
            returns the original task), or the item's own error, not raised:
            `InvalidArgumentError` (with `.violations`), `AlreadyExistsError`, ...
            Items go 1,000 (or about 1 MiB) per call; a call that fails as a whole (the server
            unreachable after retries, a read-only token) gives each of its items that error,
            and the other calls still go. 1 MiB is what a server takes by default: one with a
            lower `TASKCAST_MAX_PAYLOAD_BYTES` answers a larger call `ResourceExhaustedError`
            for each of its items (submit fewer or smaller items per call there).

        Raises:
            TypeError: A mapping with a key `TaskSpec` does not have.
        """
        out: list[TaskHandle | RpcError] = []
        for call, n in _batch.calls(items):
            try:
                results = self._call(call)
            except RpcError as exc:
                results = [exc] * n
            out += [r if isinstance(r, RpcError) else TaskHandle(self, r.id, r) for r in results]
        return out

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

    def watch_token(
        self, task_id: str, ttl: float | dt.timedelta = 900.0, cancel: bool = False
    ) -> str:
        """A short-lived token that lets a browser watch this one task through the server's
        HTTP gateway (`GET /v1/tasks/{id}/events?token=...`), and cancel it when `cancel`.

        It opens that task and nothing else, and is not accepted on gRPC. Hand it to the page
        that watches; ask for a new one when it expires.

        Args:
            task_id: The task the token opens.
            ttl: How long it is valid, in seconds or as a timedelta: 1 s to 24 h (default 15
                minutes).
            cancel: Whether it may also cancel the task (`POST /v1/tasks/{id}:cancel`).

        Raises:
            NotFoundError: Unknown id.
            InvalidArgumentError: `ttl` out of bounds.
            PermissionDeniedError: This client's token is read-only.
        """
        return self._call(_requests.watch_token(task_id, ttl, cancel))

    def kinds(self) -> list[Kind]:
        """The kinds workers registered, by name: queue, defaults, payload schema, served.

        `schema` is the JSON Schema `submit` checks payloads against (None: any JSON object);
        a payload that does not match is InvalidArgumentError, one violation per bad field.
        """
        return self._call(_requests.kinds())

    def retry(self, task_id: str, request_id: str | None = None) -> Task:
        """Run a FAILED or CANCELLED task again: a new attempt series on the same id, its events
        continuing the same sequence, with a fresh budget of attempts.

        Args:
            task_id: The task.
            request_id: Optional (at most 256 printable characters): when the task's last retry
                carried the same one, nothing runs again and the task is returned as it is.

        Returns:
            The task after the call: PENDING when this call retried it.

        Raises:
            FailedPreconditionError: The task is not FAILED or CANCELLED.
            NotFoundError: Unknown or expired id.
        """
        return self._call(_requests.retry(task_id, request_id))

    def redrive(self, **options: Unpack[_requests.RedriveOptions]) -> Redrive:
        """Retry every FAILED or CANCELLED task a filter selects, at a bounded rate, as one
        operation the server answers at once (workers run it): watch, wait for or cancel
        `result.operation` like any task; its result is {"retried", "skipped", "total"}.

        Args:
            **options: Filters, all optional and all matching: `states` ("FAILED" and/or
                "CANCELLED", or one of them as a string; default both), `kind`, `labels` (all
                must match), `error_type` (`TaskError.type`, exact), `finished_after` /
                `finished_before` (aware datetimes; the task's finish time). `max_per_second`
                (0.1 to 10,000) is required unless `dry_run`, which only counts and samples
                (`sample_size`, 1 to 100, default 10). `request_id` (default: a fresh one) makes
                a resent call answer the operation it started.

        Returns:
            The count selected (at most 100,000, oldest first; `truncated` when more matched)
            and the sample (dry run) or the operation task.

        Raises:
            InvalidArgumentError: A bad filter or rate.
            FailedPreconditionError: No live worker serves `taskcast.redrive`.
            AlreadyExistsError: The request_id started a different request.
        """
        return self._call(_requests.redrive(**options))

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
    ) -> EventStream:
        """Every event after `after_sequence`, in order, until the terminal one.

        A broken stream (server restart, slow consumer, network) resumes by itself from the
        last sequence seen: no event is missed or repeated. Use it in a `with` block, so the
        call is cancelled the moment you stop reading (a web request that ended, a `break`):

            with client.watch(task_id) as events:
                for event in events:
                    ...

        A plain `for event in client.watch(task_id)` works too, but a stream left before its
        end then stays open on the server until the iterator is garbage collected.

        Args:
            task_id: The task to watch.
            after_sequence: Events up to this sequence are skipped (0: all of them).
            keep_alives: Also yield the server's keep-alive events (default False).
            timeout: Seconds the whole watch may take, resumes included (default: no limit).

        Raises:
            NotFoundError: Unknown id.
            UnavailableError: The server stayed unreachable for `reconnect_for` seconds
                (`ResourceExhaustedError` when it stayed at its watcher limit).
            DeadlineExceededError: `timeout` seconds passed.
        """
        return EventStream(
            self, _requests.Watch(task_id, after_sequence, self.reconnect_for, **options)
        )

    def watch_group(
        self,
        label: str,
        cursors: Mapping[str, int] | None = None,
        *,
        end_when_done: bool = False,
        **options: Unpack[_requests.WatchOptions],
    ) -> EventStream:
        """The events of every task carrying `label` ("key=value"), on one stream.

        First each task's stored events (tasks in creation order), then live events, including
        those of tasks that get the label later (found within about a second). Events of one
        task come exactly once and in order, also across a broken stream, which resumes by
        itself with every task's last sequence; events of different tasks interleave (see
        `Event.task_id`). Use it in a `with` block, like `watch`.

        Args:
            label: The group, as "key=value" (one label).
            cursors: {task id: last sequence received} from an earlier watch: those tasks
                resume after it, the others start from their first event (default: all do).
            end_when_done: End once every task of the group has ended (default: never end).
            keep_alives: Also yield the server's keep-alive events (default False).
            timeout: Seconds the whole watch may take, resumes included (default: no limit).

        Raises:
            InvalidArgumentError: A bad label or cursor.
            FailedPreconditionError: The group has more than 10,000 tasks.
            UnavailableError: The server stayed unreachable for `reconnect_for` seconds.
            DeadlineExceededError: `timeout` seconds passed.
        """
        watch = _group.GroupWatch(label, cursors, end_when_done, self.reconnect_for, **options)
        return EventStream(self, watch)

    def _open(self, watch: _requests.Watch) -> Any:
        """Open (or reopen) the streaming call `watch` asks for."""
        return getattr(self._stub, watch.rpc)(
            watch.request(), timeout=watch.time_left(), metadata=self.metadata
        )

    def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result once it succeeds.

        One WatchTask stream to its end: a success's result comes with its event; after any
        other end, one GetTask reads the final task the error carries.

        Raises:
            TaskFailedError: It ended FAILED (`.error` says why).
            TaskCancelledError: It ended CANCELLED.
            WaitTimeoutError: `timeout` seconds passed first (the task goes on).
        """
        last: Event | None = None
        try:
            # To the stream's end, not the first terminal event: after a RetryTask the replay
            # holds an earlier series' end, and the server ends the stream after the last one.
            with self.watch(task_id, timeout=timeout) as events:
                for event in events:
                    last = event
        except DeadlineExceededError as exc:
            raise _requests.wait_timeout(task_id, timeout) from exc
        if _requests.succeeded(last):
            return last.result
        return _requests.outcome(self.get(task_id))  # the errors carry the final task
