"""Dramatiq messages for task attempts, encoded for the scripts to enqueue atomically."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq
from dramatiq.common import dq_name


@dataclass(frozen=True)
class Encoded:
    """A message ready for `enqueue()` in `_lib.lua`: target queue (maybe `.DQ`), id, bytes."""

    queue: str
    redis_id: str
    data: bytes


def encode(
    *,
    task_id: str,
    kind: str,
    queue: str,
    attempt: int,
    timeout_ms: int,
    delay_ms: int = 0,
    eta_ms: int = 0,
) -> Encoded:
    """Build the message that starts `attempt` of a task; `delay_ms` or `eta_ms` delays it.

    The actor name is the kind and the message id the task id, so every middleware hook finds the
    task record. The payload is not copied into the message: the `begin` script returns it.

    A delay from now is encoded as the negative eta `-delay_ms`, which the script that enqueues
    the message turns into Redis's time + delay (`enqueue()` in `_lib.lua`): no process's clock
    sets a start time. `eta_ms` is a client's absolute time, kept as given. Either way Dramatiq
    judges the eta with the clock of the worker that consumes the delay queue: a worker whose
    clock is off starts delayed messages that much early or late (never twice, never lost).
    """
    redis_id = str(uuid.uuid4())
    options: dict[str, object] = {
        "redis_message_id": redis_id,
        "tc_attempt": attempt,
        "time_limit": timeout_ms,
    }
    target = queue
    if delay_ms > 0 or eta_ms > 0:
        # A time already past (an eta) only costs a hop through the delay queue.
        target = dq_name(queue)
        options["eta"] = -delay_ms if delay_ms > 0 else eta_ms
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name=target,
        actor_name=kind,
        args=(),
        kwargs={},
        options=options,
        message_id=task_id,
    )
    return Encoded(target, redis_id, message.encode())
