"""The client's exceptions, and the one table that maps gRPC status codes onto them.

TaskcastError                   taskcast.core.errors: the root shared with workers
├── RpcError                    a call failed; `.code` keeps the grpc.StatusCode
│   ├── InvalidArgumentError        the request is malformed (`.violations` per field)
│   ├── NotFoundError               unknown task id
│   ├── AlreadyExistsError          idempotency key used for a different request
│   ├── FailedPreconditionError     e.g. cancelling a finished task
│   ├── ResourceExhaustedError      a limit; retry later
│   ├── UnauthenticatedError / PermissionDeniedError
│   ├── UnavailableError            server or Redis down, or shutting down; retry
│   ├── DeadlineExceededError       the call's own timeout passed
│   ├── CallCancelledError          the call was cancelled (CANCELLED)
│   ├── AbortedError / OutOfRangeError / UnimplementedError / DataLossError
│   └── InternalError / UnknownError    a server fault
├── TaskFailedError             wait(): the task ended FAILED (`.error`)
├── TaskCancelledError          wait(): the task ended CANCELLED
├── WaitTimeoutError            wait(): the timeout passed first
└── WrongLoopError              an AsyncTaskClient used from a second event loop

Every status code other than OK has its own class, so `except ResourceExhaustedError` works
whether the code came from a unary call, a stream, or a watch that gave up resuming.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
from google.rpc import error_details_pb2

from taskcast.core.errors import TaskcastError

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CallCancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RpcError",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskcastError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "WaitTimeoutError",
    "WrongLoopError",
    "from_grpc",
    "from_status",
    "translated",
]


class RpcError(TaskcastError):
    """A call failed with a gRPC status other than OK."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[Any] | None = None
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details or []

    @property
    def violations(self) -> list[tuple[str, str]]:
        """(field, description) pairs from a google.rpc.BadRequest detail."""
        return [
            (v.field, v.description)
            for d in self.details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]


class InvalidArgumentError(RpcError):
    """INVALID_ARGUMENT: fix the request."""


class NotFoundError(RpcError):
    """NOT_FOUND: no such task (or it expired)."""


class AlreadyExistsError(RpcError):
    """ALREADY_EXISTS: the idempotency key was used for a different request."""


class FailedPreconditionError(RpcError):
    """FAILED_PRECONDITION: the task's state forbids this."""


class ResourceExhaustedError(RpcError):
    """RESOURCE_EXHAUSTED: a limit was hit; retry later."""


class UnauthenticatedError(RpcError):
    """UNAUTHENTICATED: missing or wrong credentials."""


class PermissionDeniedError(RpcError):
    """PERMISSION_DENIED: the credentials do not allow this."""


class UnavailableError(RpcError):
    """UNAVAILABLE: the server or its Redis is down or stopping; retry."""


class DeadlineExceededError(RpcError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class CallCancelledError(RpcError):
    """CANCELLED: the call was cancelled, by this client or by the server refusing a burst."""


class AbortedError(RpcError):
    """ABORTED: a concurrency conflict; retry the whole operation."""


class OutOfRangeError(RpcError):
    """OUT_OF_RANGE: a value past the valid range."""


class UnimplementedError(RpcError):
    """UNIMPLEMENTED: the server does not have this method (an older server?)."""


class InternalError(RpcError):
    """INTERNAL: a server fault (its log has the details)."""


class UnknownError(RpcError):
    """UNKNOWN: an error the server did not classify."""


class DataLossError(RpcError):
    """DATA_LOSS: data was lost or corrupted."""


class TaskFailedError(TaskcastError):
    """The task ended FAILED; `.error` says why and `.task` is the final task."""

    def __init__(self, task: Any) -> None:
        err = task.error
        super().__init__(
            f"task {task.id} failed: {err.type}: {err.message}" if err else f"task {task.id} failed"
        )
        self.task = task
        self.error = err


class TaskCancelledError(TaskcastError):
    """The task ended CANCELLED; `.task` is the final task."""

    def __init__(self, task: Any) -> None:
        super().__init__(f"task {task.id} was cancelled")
        self.task = task


class WaitTimeoutError(TaskcastError, TimeoutError):
    """wait() gave up before the task finished; the task goes on."""


class WrongLoopError(TaskcastError, RuntimeError):
    """An AsyncTaskClient was used from an event loop other than the one it first ran in."""


_TABLE: dict[grpc.StatusCode, type[RpcError]] = {
    grpc.StatusCode.CANCELLED: CallCancelledError,
    grpc.StatusCode.UNKNOWN: UnknownError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}

# Codes after which a watch resumes from its last sequence instead of raising.
RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def error_class(code: grpc.StatusCode) -> type[RpcError]:
    """The exception class of a status code (RpcError itself only for OK)."""
    return _TABLE.get(code, RpcError)


def from_status(status: Any) -> RpcError:
    """The typed exception for a google.rpc.Status (one SubmitTasks item's error)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return error_class(code)(code, status.message, _details(status))


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def from_grpc(exc: grpc.RpcError) -> RpcError:
    """The typed exception for a failed call (sync or asyncio), rich details unpacked."""
    call: Any = exc  # sync errors are also grpc.Call; aio errors are AioRpcError
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    details: list[Any] = []
    for key, value in call.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            details = _unpack(value)
    return error_class(code)(code, message, details)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise a failed call's typed exception, `from` the gRPC one (sync or asyncio)."""
    try:
        yield
    except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one too
        raise from_grpc(exc) from exc


def retry_delay(err: RpcError) -> float | None:
    """Seconds the server asked the caller to wait (google.rpc.RetryInfo), if it did."""
    for d in err.details:
        if isinstance(d, error_details_pb2.RetryInfo) and d.HasField("retry_delay"):
            return float(d.retry_delay.ToTimedelta().total_seconds())
    return None


def _unpack(blob: bytes) -> list[Any]:
    from google.rpc import status_pb2

    return _details(status_pb2.Status.FromString(blob))


def _details(status: Any) -> list[Any]:
    out: list[Any] = []
    for detail in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ResourceInfo,
        ):
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                out.append(msg)
    return out
