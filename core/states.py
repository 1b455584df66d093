"""Task states as stored in Redis (the names of `taskcast.v1.TaskState` without prefix)."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """The life cycle of a task; see `TaskState` in the proto for each member's meaning."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Whether no further state can follow."""
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ACTIVE = (State.PENDING, State.RUNNING, State.RETRYING)
