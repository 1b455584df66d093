"""The function Dramatiq calls for a message of a kind: sync handlers run in the worker thread.

Async handlers do not run here: the actor returns at once and the Lifecycle middleware hands the
attempt to the slot loop (`worker/aio.py`), so a slow call holds a slot, never a thread.
"""

from __future__ import annotations

from collections.abc import Callable

from taskcast.worker.attempt import current
from taskcast.worker.registry import KindSpec


def make_actor_fn(spec: KindSpec) -> Callable[[], None]:
    """The actor function of `spec`; the result goes into the current `Attempt`.

    It returns None: a return value would make Dramatiq warn about its Results middleware.
    """

    def run_attempt() -> None:
        attempt = current()
        if attempt is None:  # only when a message bypassed the Lifecycle middleware
            raise RuntimeError("taskcast actor called without the Lifecycle middleware")
        if spec.is_async:
            return
        attempt.result = attempt.encode(spec.handler(attempt.payload, attempt.ctx))

    run_attempt.__name__ = spec.kind.replace(".", "_")
    return run_attempt
