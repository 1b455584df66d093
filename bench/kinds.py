"""The taskcast task kinds the benchmarks run (served by `taskcast worker bench.kinds`)."""

from __future__ import annotations

import time
from typing import Any

from taskcast.worker import TaskContext, task


@task("bench.noop", queue="default", max_attempts=1)
def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Do nothing: what is left is taskcast's own cost."""
    return None


@task("bench.async_noop", queue="default", max_attempts=1)
async def async_noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """An async no-op: what is left is the cost of an attempt on the slot loop."""
    return None


@task("bench.sleep", queue="default", max_attempts=1)
def sleep(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Hold the worker thread `ms` milliseconds (bench/fairness.py: a backlog that lasts)."""
    time.sleep(payload["ms"] / 1000)  # the work being simulated


@task("bench.fail_once", queue="default", max_attempts=1)
def fail_once(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Fail the first attempt (a FAILED task to redrive), succeed on the next."""
    if ctx.attempt == 1:
        raise RuntimeError("upstream was down")
    return ctx.attempt


# Per-key limits (bench/limits.py). A baseline run loads this module into the code this branch
# started from, which has no limits: the limited kinds are then simply not defined.
try:
    from taskcast.worker import Concurrency, Rate
except ImportError:  # the baseline's code
    pass
else:

    @task(
        "bench.noop_limited",
        queue="default",
        max_attempts=1,
        # Limits that never hold a task back at e2e speed: what is measured is their cost.
        concurrency=Concurrency(10_000),
        rate=Rate("100000/s"),
    )
    def noop_limited(payload: dict[str, Any], ctx: TaskContext) -> None:
        """`bench.noop` under a concurrency and a rate limit."""
        return None

    @task("bench.rated", queue="default", max_attempts=1, rate=Rate("20/s"))
    def rated(payload: dict[str, Any], ctx: TaskContext) -> None:
        """A no-op limited to 20 starts per second across all workers."""
        return None


# A token budget (bench/limits.py): absent from code before token budgets, like the limits above.
try:
    from taskcast.worker import Tokens
except ImportError:
    pass
else:

    @task(
        "bench.noop_tokens",
        queue="default",
        max_attempts=1,
        # Never spent at e2e speed; the key names a payload field (absent: the kind's name), so
        # the worker reads the payload too, the most a budget costs.
        tokens=Tokens("1000000000/m", key="{payload.model}"),
    )
    def noop_tokens(payload: dict[str, Any], ctx: TaskContext) -> None:
        """`bench.noop` under a token budget, reporting 1 token used."""
        ctx.used_tokens(1)
