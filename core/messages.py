"""Dramatiq messages for task attempts, encoded for the scripts to enqueue atomically."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq
from dramatiq.common import dq_name

from taskcast.core.scripts import now_ms


@dataclass(frozen=True)
class Encoded:
    """A message ready for `enqueue()` in `_lib.lua`: target queue (maybe `.DQ`), id, bytes."""

    queue: str
    redis_id: str
    data: bytes


def encode(
    *, task_id: str, kind: str, queue: str, attempt: int, timeout_ms: int, eta_ms: int | None = None
) -> Encoded:
    """Build the message that starts `attempt` of a task; `eta_ms` delays it.

    The actor name is the kind and the message id the task id, so every middleware hook finds the
    task record. The payload is not copied into the message: the `begin` script returns it.
    """
    redis_id = str(uuid.uuid4())
    options: dict[str, object] = {
        "redis_message_id": redis_id,
        "tc_attempt": attempt,
        "time_limit": timeout_ms,
    }
    target = queue
    if eta_ms is not None and eta_ms > now_ms():
        target = dq_name(queue)
        options["eta"] = eta_ms
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name=target,
        actor_name=kind,
        args=(),
        kwargs={},
        options=options,
        message_id=task_id,
    )
    return Encoded(target, redis_id, message.encode())
