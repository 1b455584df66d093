"""Built-in kinds for the demo and the tests: `demo.sleep` and `demo.fail`."""

from __future__ import annotations

import time
from typing import Any

from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.registry import task


@task("demo.sleep", queue="default", max_attempts=1)
def sleep(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleep `seconds` (default 1) in `steps` (default 4) with progress after each; cancellable."""
    seconds, steps = float(payload.get("seconds", 1)), int(payload.get("steps", 4))
    if seconds < 0 or not 1 <= steps <= 10_000:
        raise NonRetryableError("seconds must be >= 0 and steps between 1 and 10000")
    for i in range(1, steps + 1):
        deadline = time.monotonic() + seconds / steps
        while (left := deadline - time.monotonic()) > 0:
            ctx.raise_if_cancelled()
            time.sleep(min(left, 0.05))  # the work being simulated; 50 ms slices keep cancel prompt
        ctx.progress(i / steps, f"{i}/{steps}")
        if payload.get("echo"):
            ctx.output(f"step {i}\n")
    return {"slept": seconds, "steps": steps}


@task("demo.fail", queue="default", max_attempts=3, retry_backoff=(0.2, 2.0))
def fail(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fail the first `times` attempts (default: every one), then succeed; `fatal` fails at once."""
    if payload.get("fatal"):
        raise NonRetryableError(str(payload.get("message", "fatal failure requested")))
    times = payload.get("times")
    if times is None or ctx.attempt <= int(times):
        raise RuntimeError(f"{payload.get('message', 'failure requested')} (attempt {ctx.attempt})")
    return {"attempts": ctx.attempt}
