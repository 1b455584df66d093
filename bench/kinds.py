"""The taskcast task kinds the benchmarks run (served by `taskcast worker bench.kinds`)."""

from __future__ import annotations

from typing import Any

from taskcast.worker import TaskContext, task


@task("bench.noop", queue="default", max_attempts=1)
def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Do nothing: what is left is taskcast's own cost."""
    return None


@task("bench.fail_once", queue="default", max_attempts=1)
def fail_once(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Fail the first attempt (a FAILED task to redrive), succeed on the next."""
    if ctx.attempt == 1:
        raise RuntimeError("upstream was down")
    return ctx.attempt
