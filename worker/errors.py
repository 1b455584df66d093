"""Exceptions a task handler raises to steer what happens next.

TaskcastError           taskcast.core.errors: the root shared with the client
├── NonRetryableError   fail the task now, whatever attempts are left
├── RetryAfter          fail this attempt; the next waits at least `delay` seconds
└── TaskCancelled       stop: the task ends CANCELLED (raised by ctx.raise_if_cancelled())
"""

from __future__ import annotations

from taskcast.core.errors import TaskcastError

__all__ = ["NonRetryableError", "RetryAfter", "TaskCancelled", "TaskcastError"]


class NonRetryableError(TaskcastError):
    """The attempt failed in a way another attempt cannot fix."""


class RetryAfter(TaskcastError):
    """The attempt failed; retry no sooner than `delay` seconds (e.g. an HTTP Retry-After)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class TaskCancelled(TaskcastError):
    """The task was cancelled while this attempt ran."""
