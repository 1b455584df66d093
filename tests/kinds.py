"""Task kinds the tests run in real worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcast.core import redisurl
from taskcast.worker import Concurrency, NonRetryableError, Rate, TaskContext, Tokens, task

log = logging.getLogger("tests.kinds")


@task("test.echo")
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Return the payload with the attempt number."""
    return {"payload": payload, "attempt": ctx.attempt}


@task("test.chatty", max_attempts=1)
def chatty(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Emit `n` output chunks (padded to `size` characters) and `n` progress events."""
    n, size = int(payload.get("n", 10)), int(payload.get("size", 0))
    for i in range(n):
        ctx.output(f"chunk {i};".ljust(size, "."))
        ctx.progress((i + 1) / n, str(i + 1))
    return n


@task("test.block", max_attempts=1)
def block(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Report progress, then wait (up to `seconds`) for a cancel request."""
    ctx.progress(0.5, "blocking")
    deadline = time.monotonic() + float(payload.get("seconds", 30))
    while time.monotonic() < deadline:
        ctx.raise_if_cancelled()
        time.sleep(0.01)  # a handler's own work loop
    return "finished"


@task("test.async_block", max_attempts=1)
async def async_block(payload: dict[str, Any], ctx: TaskContext) -> str:
    """An async handler that waits until cancelled (or `seconds`)."""
    ctx.output("started")
    await asyncio.sleep(float(payload.get("seconds", 30)))
    return "finished"


@task("test.async_echo")
async def async_echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """An async handler that returns its payload."""
    await asyncio.sleep(0)
    return payload


@task("test.hog", max_attempts=3)
def hog(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Spin past any time limit (pure Python, so TimeLimit can interrupt it)."""
    deadline = time.monotonic() + float(payload.get("seconds", 30))
    while time.monotonic() < deadline:
        pass
    return "done"


@task("test.crash", max_attempts=2)
def crash(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Kill this worker process on the first `times` attempts (default: every attempt)."""
    times = payload.get("times")
    if times is None or ctx.attempt <= int(times):
        os.kill(os.getpid(), 9)
    return f"survived attempt {ctx.attempt}"


@task("test.bad_result", max_attempts=3)
def bad_result(payload: dict[str, Any], ctx: TaskContext) -> Any:
    """Return something that is not JSON."""
    return {1, 2, 3}


@task("test.fatal", max_attempts=5)
def fatal(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Fail without retry."""
    raise NonRetryableError("this cannot work")


@task("test.async_sleep", max_attempts=3)
async def async_sleep(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Write an output naming this task and attempt, sleep `seconds` (`first` on attempt 1),
    write it again, return."""
    mark = f"{ctx.task_id}#{ctx.attempt}"
    ctx.output(mark)
    ctx.progress(0.5, mark)
    seconds = payload.get("seconds", 0.1)
    if ctx.attempt == 1:
        seconds = payload.get("first", seconds)
    await asyncio.sleep(float(seconds))
    ctx.output(mark)
    return {"task": ctx.task_id, "attempt": ctx.attempt}


@task("test.flaky", max_attempts=2, retry_backoff=(0.1, 0.5))
def flaky(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Report progress, then fail the first attempt; the second succeeds."""
    ctx.progress(0.5, f"attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@task("test.logs", max_attempts=1)
def logs(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Log one WARNING line (the tests' workers log at WARNING) naming `mark`."""
    log.warning("sync handler says %s", payload.get("mark", ""))
    return "logged"


@task("test.async_logs", max_attempts=1)
async def async_logs(payload: dict[str, Any], ctx: TaskContext) -> str:
    """The same from an async handler on the slot loop."""
    await asyncio.sleep(0)
    log.warning("async handler says %s", payload.get("mark", ""))
    return "logged"


class ReportPayload(BaseModel):
    """A `test.report` payload: a user kind's pydantic model, checked by the server at submit."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    pages: int = Field(1, ge=1, le=100)
    tags: list[str] = Field(default_factory=list)


@task("test.report", payload=ReportPayload, payload_model=True)
def report(payload: ReportPayload, ctx: TaskContext) -> dict[str, Any]:
    """Say what the handler received: the validated model, not the dict."""
    return {"received": type(payload).__name__, "title": payload.title, "pages": payload.pages}


def _current_span() -> dict[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return {"trace_id": f"0x{context.trace_id:032x}", "span_id": f"0x{context.span_id:016x}"}


@task("test.span")
def span(payload: dict[str, Any], ctx: TaskContext) -> dict[str, str]:
    """The trace and span current inside a sync handler."""
    return _current_span()


@task("test.async_span")
async def async_span(payload: dict[str, Any], ctx: TaskContext) -> dict[str, str]:
    """The same inside an async handler on the slot loop."""
    await asyncio.sleep(0)
    return _current_span()


# Per-key limits. The handlers count themselves in Redis (keys the test names in the payload),
# so the test reads what really ran at once, not what the worker believes.
_redis: Any = None


def _rdb() -> Any:
    global _redis  # one client per worker process, made in it (after Dramatiq forked it)
    if _redis is None:
        _redis = redisurl.sync_client(os.environ["TASKCAST_REDIS_URL"])
    return _redis


def _enter(counter: str) -> None:
    """Count one more running under `counter`; keep the most ever seen at once."""
    now = _rdb().incr(counter)
    _rdb().zadd(counter + ".max", {"max": now}, gt=True)


@task("test.limited", max_attempts=3, concurrency=Concurrency(3, key="{payload.customer}"))
async def limited(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Count itself running under `payload.counter` for `seconds` (`first` on attempt 1);
    returns the attempt."""
    counter = payload["counter"]
    seconds = payload.get("first") if ctx.attempt == 1 else None
    _enter(counter)
    try:
        await asyncio.sleep(float(seconds or payload.get("seconds", 0.1)))
    finally:
        _rdb().decr(counter)
    return ctx.attempt


@task("test.counted", max_attempts=1)
def counted(payload: dict[str, Any], ctx: TaskContext) -> int:
    """`test.limited` as a sync kind without limits of its own (a submit gives them)."""
    counter = payload["counter"]
    _enter(counter)
    try:
        time.sleep(float(payload.get("seconds", 0.1)))  # the handler's work
    finally:
        _rdb().decr(counter)
    return ctx.attempt


@task("test.ordered", max_attempts=2, retry_backoff=(0.05, 0.1))
def ordered(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Append `tag#attempt` to the Redis list `payload.log` as it starts, then take `seconds`;
    with `fail_first`, the first attempt then fails (and is retried). Returns the attempt."""
    _rdb().rpush(payload["log"], f"{payload['tag']}#{ctx.attempt}")
    time.sleep(float(payload.get("seconds", 0)))
    if payload.get("fail_first") and ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@task("test.tokens", max_attempts=1, tokens=Tokens("100/s", key="{payload.account}", reserve=10))
def tokens(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Report `payload.use` tokens used (none when absent); returns the attempt."""
    if "use" in payload:
        ctx.used_tokens(int(payload["use"]))
    return ctx.attempt


@task("test.tokens_minute", max_attempts=1, tokens=Tokens("1000/m", key="{payload.account}"))
def tokens_minute(payload: dict[str, Any], ctx: TaskContext) -> int:
    """`test.tokens` under 1,000 tokens a minute (reserving 1)."""
    return tokens(payload, ctx)


@task("test.rated", max_attempts=1, rate=Rate("20/s", key="{payload.account}"))
def rated(payload: dict[str, Any], ctx: TaskContext) -> int:
    """Return Redis's time (ms) as the handler starts."""
    seconds, micros = _rdb().time()
    return int(seconds) * 1000 + int(micros) // 1000
