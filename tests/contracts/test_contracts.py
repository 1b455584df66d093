"""The public surface: generated code fresh, every RPC reachable from the client, imports clean."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest

import taskcast.client
from taskcast.client import AsyncTaskClient, AsyncTaskHandle, TaskClient, TaskHandle
from taskcast.v1 import tasks_pb2
from tests.support import ROOT

RPC_TO_METHOD = {
    "SubmitTask": "submit",
    "SubmitTasks": "submit_many",
    "GetTask": "get",
    "CancelTask": "cancel",
    "RetryTask": "retry",
    "RedriveTasks": "redrive",
    "ListTasks": "list",
    "GetStats": "stats",
    "ListKinds": "kinds",
    "WatchTask": "watch",
    "WatchTasks": "watch_group",
    "CreateWatchToken": "watch_token",
}


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_rpc_has_a_client_method_on_both_clients() -> None:
    service = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"]
    assert {m.name for m in service.methods} == set(RPC_TO_METHOD)
    for cls in (TaskClient, AsyncTaskClient):
        for rpc, name in RPC_TO_METHOD.items():
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name} for {rpc}"


def _surface(cls: type) -> dict[str, list[tuple[str, Any, Any, str]]]:
    """Public methods and the constructor: each parameter's name, kind, default and annotation."""
    names = [n for n, m in inspect.getmembers(cls, callable) if not n.startswith("_")]
    return {
        name: [
            # The one allowed difference: the async client takes a grpc.aio channel.
            (p.name, p.kind, p.default, str(p.annotation).replace("grpc.aio.", "grpc."))
            for p in inspect.signature(getattr(cls, name)).parameters.values()
        ]
        for name in [*names, "__init__"]
    }


@pytest.mark.parametrize(
    ("sync", "aio"), [(TaskClient, AsyncTaskClient), (TaskHandle, AsyncTaskHandle)]
)
def test_sync_and_async_twins_have_the_same_methods_and_arguments(sync: type, aio: type) -> None:
    assert _surface(aio) == _surface(sync)


def test_client_public_names_are_pinned() -> None:
    assert taskcast.client.__all__ == [
        "AsyncTaskClient",
        "AsyncTaskHandle",
        "TaskClient",
        "TaskHandle",
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


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_client_import_pulls_in_neither_dramatiq_nor_redis_nor_the_server() -> None:
    modules = _imported_after("import taskcast.client")
    leaked = {
        m
        for m in modules
        if m.split(".")[0] in ("dramatiq", "redis")
        or m.startswith(("taskcast.server", "taskcast.worker"))
    }
    assert not leaked


def test_client_imports_of_taskcast_are_the_client_v1_and_the_error_root() -> None:
    # The allowed set grew by `taskcast.core.errors`: it holds the TaskcastError root shared with
    # workers and imports nothing, so a client-only install still needs grpc and protobuf alone.
    modules = _imported_after("import taskcast.client")
    ours = {m for m in modules if m.split(".")[0] == "taskcast"}
    others = {m for m in ours if not m.startswith(("taskcast.client", "taskcast.v1"))}
    assert others == {"taskcast", "taskcast.core", "taskcast.core.errors"}


def test_client_and_worker_errors_share_one_root() -> None:
    import taskcast.worker
    from taskcast.core.errors import TaskcastError

    assert taskcast.client.TaskcastError is TaskcastError
    assert taskcast.worker.TaskcastError is TaskcastError
    assert issubclass(taskcast.client.RpcError, TaskcastError)
    assert issubclass(taskcast.client.WaitTimeoutError, TaskcastError)
    assert issubclass(taskcast.worker.NonRetryableError, TaskcastError)


def test_worker_imports_neither_grpc_nor_the_server() -> None:
    modules = _imported_after("import taskcast.worker.boot, taskcast.worker.kinds.demo")
    assert not {m for m in modules if m.split(".")[0] == "grpc" or m.startswith("taskcast.server")}


def test_server_never_imports_worker_code() -> None:
    modules = _imported_after("import taskcast.server.app")
    assert not {m for m in modules if m.startswith("taskcast.worker")}
