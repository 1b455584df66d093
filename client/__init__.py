"""The Python client of taskcast.

    from taskcast.client import TaskClient

    with TaskClient("127.0.0.1:50051") as client:
        handle = client.submit("demo.sleep", {"seconds": 2})
        with handle.watch() as events:  # the call is cancelled when the block is left
            for event in events:
                print(event.sequence, event.type, event.state or event.progress)
        print(handle.wait())

Importing it pulls in grpc and the generated code only: never dramatiq, redis or the server.
"""

from __future__ import annotations

from taskcast.client._aio import AsyncEventStream, AsyncTaskClient, AsyncTaskHandle
from taskcast.client._batch import TaskSpec
from taskcast.client._client import EventStream, TaskClient, TaskHandle
from taskcast.client._errors import (
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcError,
    TaskCancelledError,
    TaskcastError,
    TaskFailedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    WaitTimeoutError,
    WrongLoopError,
)
from taskcast.client._types import (
    Event,
    EventType,
    Kind,
    KindStats,
    LimitStats,
    QueueStats,
    Redrive,
    Stats,
    Task,
    TaskError,
    TaskState,
    WorkerStats,
)

__all__ = [
    # clients and handles
    "AsyncTaskClient",
    "AsyncTaskHandle",
    "TaskClient",
    "TaskHandle",
    # what they return
    "AsyncEventStream",
    "Event",
    "EventStream",
    "EventType",
    "Kind",
    "KindStats",
    "LimitStats",
    "QueueStats",
    "Redrive",
    "Stats",
    "Task",
    "TaskError",
    "TaskSpec",
    "TaskState",
    "WorkerStats",
    # errors
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
]
