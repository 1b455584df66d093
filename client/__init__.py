"""The Python client of taskcast.

    from taskcast.client import TaskClient

    with TaskClient("127.0.0.1:50051") as client:
        handle = client.submit("demo.sleep", {"seconds": 2})
        for event in handle.watch():
            print(event.sequence, event.type, event.state or event.progress)
        print(handle.wait())

Importing it pulls in grpc and the generated code only: never dramatiq, redis or the server.
"""

from __future__ import annotations

from taskcast.client._aio import AsyncTaskClient, AsyncTaskHandle
from taskcast.client._client import TaskClient, TaskHandle
from taskcast.client._errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RpcError,
    TaskCancelledError,
    TaskcastError,
    TaskFailedError,
    UnauthenticatedError,
    UnavailableError,
    WaitTimeoutError,
)
from taskcast.client._types import (
    Event,
    Kind,
    KindStats,
    QueueStats,
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
    "Event",
    "Kind",
    "KindStats",
    "QueueStats",
    "Stats",
    "Task",
    "TaskError",
    "TaskState",
    "WorkerStats",
    # errors
    "AlreadyExistsError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RpcError",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskcastError",
    "UnauthenticatedError",
    "UnavailableError",
    "WaitTimeoutError",
]
