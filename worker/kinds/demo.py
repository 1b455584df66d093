"""Built-in kinds for the demo and the tests: `demo.sleep` and `demo.fail`."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.registry import task


class SleepPayload(BaseModel):
    """A `demo.sleep` payload."""

    # Unknown keys are ignored, as they always were (extra="ignore" leaves the schema open).
    model_config = ConfigDict(frozen=True)

    seconds: float = Field(1.0, ge=0, description="how long in all")
    steps: int = Field(4, ge=1, le=10_000, description="progress events, one per step")
    echo: bool = Field(False, description="also write an output line per step")


class FailPayload(BaseModel):
    """A `demo.fail` payload."""

    model_config = ConfigDict(frozen=True)

    times: int | None = Field(None, description="attempts that fail (default: every one)")
    fatal: bool = Field(False, description="fail at once, without retry")
    message: str | None = Field(None, description="the error message")


@task("demo.sleep", queue="default", max_attempts=1, payload=SleepPayload, payload_model=True)
def sleep(payload: SleepPayload, ctx: TaskContext) -> dict[str, Any]:
    """Sleep `seconds` (default 1) in `steps` (default 4) with progress after each; cancellable."""
    seconds, steps = payload.seconds, payload.steps
    for i in range(1, steps + 1):
        deadline = time.monotonic() + seconds / steps
        while (left := deadline - time.monotonic()) > 0:
            ctx.raise_if_cancelled()
            time.sleep(min(left, 0.05))  # the work being simulated; 50 ms slices keep cancel prompt
        ctx.progress(i / steps, f"{i}/{steps}")
        if payload.echo:
            ctx.output(f"step {i}\n")
    return {"slept": seconds, "steps": steps}


@task(
    "demo.fail",
    queue="default",
    max_attempts=3,
    retry_backoff=(0.2, 2.0),
    payload=FailPayload,
    payload_model=True,
)
def fail(p: FailPayload, ctx: TaskContext) -> dict[str, Any]:
    """Fail the first `times` attempts (default: every one), then succeed; `fatal` fails at once."""
    if p.fatal:
        raise NonRetryableError(p.message or "fatal failure requested")
    if p.times is None or ctx.attempt <= p.times:
        raise RuntimeError(f"{p.message or 'failure requested'} (attempt {ctx.attempt})")
    return {"attempts": ctx.attempt}
