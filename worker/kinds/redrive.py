"""The built-in kind `taskcast.redrive`: one RedriveTasks operation, run on the slot loop.

The server snapshotted the selected ids into the operation's list and its progress hash (cursor
0). Each tick here reads the next batch at the cursor, waits for the pacer, then sends one
pipeline of `retry.lua` steps, each of which checks and advances the cursor atomically with its
retry (`calls.redrive_step`): a step sent twice, by a resent pipeline or by the next attempt after
this worker was lost, changes nothing, so no task is retried twice and a new attempt simply goes
on from the cursor.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aredis

from taskcast.core import calls, scripts
from taskcast.core.calls import REDRIVE_KIND, REDRIVE_QUEUE, StepResult
from taskcast.core.layout import Layout
from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.registry import task

__all__ = ["Pacer", "configure"]

MAX_BATCH = 500  # steps per pipeline: a few ms of Redis time, so other clients still get in
# Added to the one-second window: event times are whole Redis milliseconds, so two retries
# 1000.4 ms apart can read 1000 ms apart; 5 ms keeps every measured window within the limit.
MARGIN_S = 0.005
REPORT_EVERY_S = 0.5  # progress events at most this often (and one at the end)


class Pacer:
    """At most `cap` retries in any window of `window` seconds, spread evenly within it.

    The window check counts every batch that ended within one window before this batch starts, so
    any window, wherever it falls, holds at most `cap`. A rate of 1 or more allows floor(rate) in
    any second; under 1, one retry per 1/rate seconds. Batches are about 100 ms of the rate, and
    start at least (previous batch's retries / rate) apart, so the limit is not spent in a burst
    at the start of each second.

    A batch's end is Redis's clock after its last retry (`TIME` at the end of its pipeline), not
    when the reply was read: on a busy worker the reply can wait tens of ms for the GIL, and with
    the limit fully used every ms a window starts late is lost for good (10,000 at 500/s took
    22.7 s with local end times on a loaded machine). Redis's clock is turned into this one's by
    the largest (Redis time - local time at reading its reply) seen, which never exceeds the true
    offset: a window may start late by the quickest reply's latency, never early.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.window = (1.0 if rate >= 1 else 1.0 / rate) + MARGIN_S
        self.cap = max(1, math.floor(rate))
        self.batch = max(1, min(self.cap, math.ceil(rate / 10), MAX_BATCH))
        self._clock = clock
        self._ended: collections.deque[tuple[float, int]] = collections.deque()  # Redis clock
        self._offset = -math.inf  # Redis clock - this clock, a lower bound
        self._next = self._started = 0.0

    def delay(self, n: int) -> float:
        """Seconds to wait before a batch of up to `n` retries may start; 0: it starts now."""
        now = self._clock()
        while self._ended and self._ended[0][0] - self._offset <= now - self.window:
            self._ended.popleft()
        wait = self._next - now
        excess = sum(count for _, count in self._ended) + n - self.cap
        for end, count in self._ended:
            if excess <= 0:
                break
            wait = max(wait, end - self._offset + self.window - now)
            excess -= count
        if wait <= 0:
            self._started = now
        return max(0.0, wait)

    def done(self, retried: int, end: float | None = None) -> None:
        """Record that the batch that started last has ended, with `retried` retries, its last
        at `end` by Redis's clock (None: now, by this clock)."""
        now = self._clock()
        if end is None:
            end, self._offset = now, max(self._offset, 0.0)
        self._offset = max(self._offset, end - now)
        if retried:
            self._ended.append((end, retried))
        self._next = self._started + retried / self.rate


@dataclass(frozen=True)
class Env:
    """What the handler needs from its worker process."""

    client: aredis.Redis
    layout: Layout


_env: Env | None = None


def configure(client: aredis.Redis, layout: Layout) -> None:
    """Give the handler its Redis client and layout (worker boot, in each worker process)."""
    global _env  # one per process, set once at boot like Dramatiq's broker
    _env = Env(client, layout)


class Operation:
    """One operation's state in Redis, stepped a batch at a time."""

    def __init__(self, env: Env, op_id: str) -> None:
        self.client, self.layout, self.op_id = env.client, env.layout, op_id
        self._scripts = scripts.register(env.client)
        self.counts = {"total": 0, "cursor": 0, "retried": 0, "skipped": 0}

    async def read(self) -> None:
        """Load the progress hash (the cursor a previous attempt left)."""
        values = await self.client.hmget(self.layout.redrive(self.op_id), *self.counts)
        if values[0] is None:
            raise NonRetryableError(f"redrive {self.op_id}: its snapshot expired; start it anew")
        self.counts = {k: int(v or 0) for k, v in zip(self.counts, values, strict=True)}

    @property
    def left(self) -> int:
        """Ids not yet stepped."""
        return self.counts["total"] - self.counts["cursor"]

    async def prepare(self, n: int) -> list[calls.Call]:
        """The steps of the next `n` ids (their fields read now, before the pacer's wait, so a
        batch costs one round trip inside the paced window)."""
        cursor = self.counts["cursor"]
        raw = await self.client.lrange(self.layout.redrive_ids(self.op_id), cursor, cursor + n - 1)
        ids = [i.decode() for i in cast("list[bytes]", raw)]
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(self.layout.task(task_id), *calls.RETRY_FIELDS)
            fields = await pipe.execute()
        return [
            calls.redrive_step(self.layout, self.op_id, cursor + i, task_id, values)
            for i, (task_id, values) in enumerate(zip(ids, fields, strict=True))
        ]

    async def send(self, steps: list[calls.Call]) -> tuple[int, float]:
        """Send the steps in one pipeline and read the counts back; how many were retried and
        Redis's time (s) after the last (a task that changed since `prepare` stops the batch
        there: the next one reads it again)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for call in steps:
                await self._scripts[call.script](keys=call.keys, args=call.args, client=pipe)
            pipe.hmget(self.layout.redrive(self.op_id), *self.counts)
            pipe.time()
            *replies, counts, (seconds, micros) = await pipe.execute()
        self.counts = {k: int(v or 0) for k, v in zip(self.counts, counts, strict=True)}
        retried = sum(calls.redrive_step_reply(r) is StepResult.RETRIED for r in replies)
        return retried, seconds + micros / 1e6

    async def finish(self) -> None:
        """Drop the ids: the operation is done (a cancelled one keeps them, so a RetryTask of
        the operation goes on from its cursor)."""
        await self.client.delete(self.layout.redrive_ids(self.op_id))

    def summary(self) -> dict[str, int]:
        """The operation's result: its counts."""
        return {k: self.counts[k] for k in ("retried", "skipped", "total")}


@task(REDRIVE_KIND, queue=REDRIVE_QUEUE, max_attempts=20, retry_backoff=(0.5, 5.0))
async def redrive(payload: dict[str, Any], ctx: TaskContext) -> dict[str, int]:
    """Retry the operation's tasks from its cursor at no more than `max_per_second`."""
    if _env is None:
        raise RuntimeError(f"{REDRIVE_KIND} runs only in a taskcast worker (worker/boot.py)")
    op = Operation(_env, ctx.task_id)
    await op.read()
    pacer = Pacer(float(payload["max_per_second"]))
    reported = time.monotonic()
    while op.left > 0:
        steps = await op.prepare(min(pacer.batch, op.left))
        # ASYNC110: the pace itself has no event to wait for; re-checked: asyncio may wake early
        while (wait := pacer.delay(len(steps))) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        pacer.done(*await op.send(steps))
        if time.monotonic() - reported >= REPORT_EVERY_S and op.left:
            reported = time.monotonic()
            _report(op, ctx)
    _report(op, ctx)
    await op.finish()
    return op.summary()


def _report(op: Operation, ctx: TaskContext) -> None:
    c = op.counts
    fraction = c["cursor"] / c["total"] if c["total"] else 1.0
    ctx.progress(fraction, f"retried {c['retried']}, skipped {c['skipped']} of {c['total']}")
