"""The taskcast task kinds the benchmarks run (served by `taskcast worker bench.kinds`)."""

from __future__ import annotations

from typing import Any

from taskcast.worker import TaskContext, task


@task("bench.noop", queue="default", max_attempts=1)
def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Do nothing: what is left is taskcast's own cost."""
    return None
