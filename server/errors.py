"""Domain errors with their gRPC status, and the one place that turns them into aborts.

ServiceError
├── InvalidArgument      INVALID_ARGUMENT + google.rpc.BadRequest field violations
├── NotFound             NOT_FOUND + ResourceInfo
├── AlreadyExists        ALREADY_EXISTS (idempotency key reused for another request)
├── FailedPrecondition   FAILED_PRECONDITION + PreconditionFailure
├── ResourceExhausted    RESOURCE_EXHAUSTED + RetryInfo (too many watchers, slow watcher)
├── Unavailable          UNAVAILABLE + RetryInfo (Redis down, server shutting down)
├── Unauthenticated      UNAUTHENTICATED (no token, an unknown one, an expired watch token)
└── PermissionDenied     PERMISSION_DENIED (a token that does not allow this call)
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

import grpc
import redis
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("taskcast.server")
# A client refuses trailers over 8 KiB (grpc's default max_metadata_size); the status message
# travels twice (grpc-message, percent-encoded: up to 3 bytes per byte, and inside the base64
# grpc-status-details-bin beside the violations), so a refusal lists at most this much.
MAX_LISTED, MESSAGE_BUDGET = 10, 1024  # violations; bytes of UTF-8 message


def clip(text: str, limit: int = 64) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut: for echoing input."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class ServiceError(Exception):
    """An RPC outcome other than OK, with a message a person can act on."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def details(self) -> list[Any]:
        """Rich error details (google.rpc messages) to attach."""
        return []


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` name each bad field (the first few, bounded)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        listed: list[tuple[str, str]] = []
        size = 0
        for field, description in violations[:MAX_LISTED]:
            field, description = clip(field, 100), clip(description, 400)
            size += len(f"{field}: {description}; ".encode())
            if listed and size > MESSAGE_BUDGET:
                break
            listed.append((field, description))
        more = len(violations) - len(listed)
        text = "; ".join(f"{f}: {d}" for f, d in listed)
        super().__init__(f"{text}; and {more} more" if more else text)
        self.violations = listed

    def details(self) -> list[Any]:
        """A BadRequest with one violation per field."""
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
        ]


class NotFound(ServiceError):
    """No task with that id (never existed, or expired after its retention)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found (unknown id, or finished and past retention)")
        self.task_id = task_id

    def details(self) -> list[Any]:
        """A ResourceInfo naming the task."""
        return [
            error_details_pb2.ResourceInfo(
                resource_type="taskcast.v1.Task", resource_name=self.task_id
            )
        ]


class AlreadyExists(ServiceError):
    """The idempotency key belongs to a different request."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """The task is in a state that forbids the request."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, *, subject: str, type_: str = "STATE") -> None:
        super().__init__(message)
        self.subject, self.type_ = subject, type_

    def details(self) -> list[Any]:
        """A PreconditionFailure naming the task."""
        violation = error_details_pb2.PreconditionFailure.Violation(
            type=self.type_, subject=self.subject, description=str(self)
        )
        return [error_details_pb2.PreconditionFailure(violations=[violation])]


class _Retryable(ServiceError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> list[Any]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(self.retry_after * 1000))
        return [error_details_pb2.RetryInfo(retry_delay=delay)]


class ResourceExhausted(_Retryable):
    """A limit was hit; retry later (a slow watcher resumes from its last sequence)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(_Retryable):
    """A dependency is down or the server is stopping; retry, maybe elsewhere."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ServiceError):
    """The call carries no token the server knows (or a watch token expired or was altered)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller is known, and its token does not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


def translate(exc: BaseException) -> ServiceError:
    """Any error as the ServiceError it maps to (Redis failures included; anything else is
    logged and becomes INTERNAL): for the gRPC abort here and the HTTP gateway's answers."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, redis.RedisError):
        return _redis_error(exc)
    log.exception("unexpected error")
    return ServiceError("internal error; the server log has the details")


def _redis_error(exc: redis.RedisError) -> ServiceError:
    """Every way Redis can fail, as a status a caller can act on (never INTERNAL)."""
    text = str(exc)
    if isinstance(exc, redis.ResponseError) and text.startswith("OOM"):
        log.error("redis is out of memory: %s", text)
        return ResourceExhausted(
            "task store (Redis) is full (maxmemory reached); finished tasks "
            "must expire or Redis needs more memory",
            retry_after=5.0,
        )
    if isinstance(exc, redis.ResponseError) and text.startswith(("READONLY", "MASTERDOWN")):
        log.warning("redis is not writable: %s", text)
        return Unavailable("task store (Redis) is failing over; retry shortly")
    if isinstance(exc, redis.InvalidResponse):
        log.error("the server at TASKCAST_REDIS_URL does not speak Redis: %s", text)
        return Unavailable(
            "task store misconfigured: TASKCAST_REDIS_URL does not answer like Redis"
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        log.warning("redis unavailable: %s", text)
        return Unavailable("task store (Redis) unavailable; retry shortly")
    log.exception("unexpected redis error")
    return Unavailable("task store (Redis) error; retry shortly (the server log has the details)")


def status_of(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status `exc` maps to, rich details packed: what `abort` sends, and what
    SubmitTasks answers for one item."""
    err = translate(exc)
    packed = []
    for detail in err.details():
        box = any_pb2.Any()
        box.Pack(detail)
        packed.append(box)
    return status_pb2.Status(code=err.code.value[0], message=str(err), details=packed)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """End the RPC with the status `exc` maps to, with rich details in the trailers."""
    status = rpc_status.to_status(status_of(exc))
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map every error a handler raises (unary or server-streaming) through `abort`."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: Any) -> Any:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await abort(context, exc)

        return stream

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return unary
