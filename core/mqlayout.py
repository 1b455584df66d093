"""Dramatiq's Redis layout, and the messages taskcast's scripts put there: the one place that
knows where RedisBroker keeps its messages (its Python side; `mq_*` in `lua/_lib.lua` is the Lua
side, and `tests/integration/test_delivery.py` runs both against `RedisBroker.enqueue`).

Dramatiq 2.2 (`dramatiq/brokers/redis/dispatch.lua`), under a namespace `ns`:

    ns:<queue>                      list of the ids of waiting messages
    ns:<queue>.msgs                 hash id -> encoded message
    ns:<queue>.DQ, ns:<queue>.DQ.msgs   the delay queue, the same pair (the eta is in the message)
    ns:<queue>.XQ, ns:<queue>.XQ.msgs   dead letters, a sorted set by time, and their messages
    ns:__acks__.<broker id>.<queue> ids fetched by one broker and not yet acknowledged

taskcast adds `ns:<queue>.wake`: tokens an idle consumer blocks on (`worker/transport.py`);
the rule that writes them is `wake()` in `lua/_lib.lua`, for every caller. And the buckets of
tasks that wait by priority and fair share instead of on `ns:<queue>` (`place()` in
`lua/_lib.lua`, served by `lua/_fetch.lua` inside Dramatiq's fetch):

    ns:<queue>.fair                 hash: "n" messages in buckets, weights other than 1
    ns:<queue>.fair.<p>             sorted set of tenants with messages of priority p, by pass
    ns:<queue>.fair.<p>.<tenant>    sorted set of that tenant's fairness keys, by pass
    ns:<queue>.fair.<p>.<tenant>:<key>  list of message ids (the default bucket, priority 3 of
                                    the default tenant with no key, is `ns:<queue>` itself)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq

from taskcast.core.scheduling import DEFAULT_PRIORITY

DELAY_SUFFIX = ".DQ"


def delayed(queue: str) -> str:
    """The delay queue of `queue` (Dramatiq's `dq_name`)."""
    return queue + DELAY_SUFFIX


def is_delayed(queue: str) -> bool:
    """Whether `queue` is a delay queue."""
    return queue.endswith(DELAY_SUFFIX)


def canonical(queue: str) -> str:
    """The queue a delay queue feeds (a live queue is its own)."""
    return queue.removesuffix(DELAY_SUFFIX)


@dataclass(frozen=True)
class MQLayout:
    """Dramatiq's key names in one namespace, and taskcast's wake-up lists beside them."""

    namespace: str

    def queue(self, queue: str) -> str:
        """The list of waiting message ids."""
        return f"{self.namespace}:{queue}"

    def msgs(self, queue: str) -> str:
        """The hash of the queue's messages by id."""
        return f"{self.namespace}:{queue}.msgs"

    def dead(self, queue: str) -> str:
        """The sorted set of dead-lettered ids of a queue (a delay queue shares its queue's)."""
        return f"{self.namespace}:{canonical(queue)}.XQ"

    def acks(self, broker_id: str, queue: str) -> str:
        """The set of ids one broker fetched from `queue` and has not acknowledged."""
        return f"{self.namespace}:__acks__.{broker_id}.{queue}"

    def heartbeats(self) -> str:
        """The sorted set of broker ids by last command (Dramatiq's own; taskcast writes none)."""
        return f"{self.namespace}:__heartbeats__"

    def fair(self, queue: str) -> str:
        """The hash of how many messages wait in the queue's priority and fairness buckets
        ("n"), and their weights (`place()` in lua/_lib.lua)."""
        return f"{self.namespace}:{queue}.fair"

    def bucket(self, queue: str, priority: int, tenant: str = "", key: str = "") -> str:
        """The list where tasks of one priority, tenant ("": the default one) and fairness key
        wait; the default bucket (3, "", "") is the queue's own list."""
        if (priority, tenant, key) == (DEFAULT_PRIORITY, "", ""):
            return self.queue(queue)
        return f"{self.fair(queue)}.{priority}.{tenant}:{key}"

    def wake(self, queue: str) -> str:
        """The wake-up list idle consumers of `queue` block on."""
        return f"{self.namespace}:{queue}.wake"


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
        target = delayed(queue)
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
