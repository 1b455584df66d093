"""What the sync and async clients share: requests, channel options, the reconnect policy."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

from taskcast.v1 import tasks_pb2 as pb

DEFAULT_SERVER = "127.0.0.1:50051"

_RETRY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# gRPC's own retries for the calls that are safe to repeat: submit carries an idempotency key.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "taskcast.v1.TaskService", "method": m}
                    for m in ("SubmitTask", "GetTask", "ListTasks", "GetStats")
                ],
                "retryPolicy": _RETRY,
            }
        ]
    }
)

CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 << 20),
]


def call_metadata(
    metadata: list[tuple[str, str]] | None, token: str | None
) -> list[tuple[str, str]] | None:
    """The metadata sent with every call: the caller's, plus the bearer token if there is one
    (`token`, else `TASKCAST_TOKEN`)."""
    token = token or os.environ.get("TASKCAST_TOKEN")
    if not token:
        return metadata
    return [*(metadata or []), ("authorization", f"Bearer {token}")]


def server_address(address: str | None) -> str:
    """The address given, else `TASKCAST_SERVER`, else 127.0.0.1:50051."""
    return address or os.environ.get("TASKCAST_SERVER") or DEFAULT_SERVER


def _duration(seconds: float | dt.timedelta, target: Any) -> None:
    target.FromTimedelta(
        seconds if isinstance(seconds, dt.timedelta) else dt.timedelta(seconds=seconds)
    )


def submit_request(
    kind: str,
    payload: Mapping[str, Any] | str | None,
    *,
    queue: str | None,
    labels: Mapping[str, str] | None,
    delay: float | dt.timedelta | None,
    not_before: dt.datetime | None,
    max_attempts: int | None,
    timeout: float | dt.timedelta | None,
    idempotency_key: str | None,
) -> pb.SubmitTaskRequest:
    """A SubmitTaskRequest; a fresh idempotency key when none is given, so retries are safe."""
    text = payload if isinstance(payload, str) else json.dumps(dict(payload or {}))
    req = pb.SubmitTaskRequest(
        kind=kind,
        payload_json=text,
        queue=queue or "",
        labels=dict(labels or {}),
        idempotency_key=idempotency_key or f"auto-{uuid.uuid4().hex}",
        max_attempts=max_attempts or 0,
    )
    if delay is not None:
        _duration(delay, req.delay)
    if not_before is not None:
        req.not_before.FromDatetime(not_before)
    if timeout is not None:
        _duration(timeout, req.timeout)
    return req


def list_request(
    state: str | None,
    kind: str | None,
    labels: Mapping[str, str] | None,
    page_size: int,
    page_token: str,
    include_payloads: bool = False,
) -> pb.ListTasksRequest:
    """A ListTasksRequest; `state` by name ("RUNNING")."""
    return pb.ListTasksRequest(
        state=pb.TaskState.Value(f"TASK_STATE_{state.upper()}")
        if state
        else pb.TASK_STATE_UNSPECIFIED,
        kind=kind or "",
        labels=dict(labels or {}),
        page_size=page_size,
        page_token=page_token,
        include_payloads=include_payloads,
    )


class Reconnect:
    """When a watch stream breaks: back off with jitter; give up after `budget` failing seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._since: float | None = None
        self._delay = 0.05

    def ok(self) -> None:
        """An event arrived: the connection is healthy again."""
        self._since, self._delay = None, 0.05

    def next_delay(self, hint: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None to give up.

        Exponential from 50 ms to 2 s with jitter, so a burst of rejected streams comes back
        spread out; never sooner than the server's RetryInfo `hint` (capped at 30 s).
        """
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since > self.budget:
            return None
        delay, self._delay = self._delay, min(self._delay * 2, 2.0)
        delay *= random.uniform(0.5, 1.0)
        if hint is not None:
            delay = max(delay, min(hint, 30.0) * random.uniform(1.0, 1.2))
        return delay
