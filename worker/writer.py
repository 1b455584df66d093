"""The Redis writes of async attempts, batched: one pipeline per flush, never a wait on the loop.

Hundreds of attempts on one loop each writing progress, output and their outcome would cost a
round trip per write. Instead every write is queued here, in order, and one flusher sends all that
is waiting as one pipeline (non-transactional: the scripts are independent, and each is fenced by
attempt and per-attempt counter, so resending a batch after a lost reply changes nothing). While
Redis is away the flusher keeps the batch and retries with backoff: an outcome is never dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import redis
import redis.asyncio as aredis

from taskcast.core import scripts
from taskcast.core.calls import Call

log = logging.getLogger("taskcast.worker")

__all__ = ["Writer"]

_Op = tuple[Call, "asyncio.Future[Any]"]


class Writer:
    """Queues script calls on the slot loop; one task there flushes them in order."""

    MAX_BATCH = 500  # one pipeline's worth: a few ms of Redis time, so other clients still get in

    def __init__(self, client: aredis.Redis, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._scripts = scripts.register(client)
        self._loop = loop
        self._ops: collections.deque[_Op] = collections.deque()
        self._ready = asyncio.Event()
        self.flushes = 0

    def call(self, call: Call) -> asyncio.Future[Any]:
        """Queue a script call; the future gets its reply (call on the loop's thread)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.append((call, future))
        self._ready.set()
        return future

    async def run(self) -> None:
        """Flush until cancelled; started once on the slot loop."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._ops:
                batch = [self._ops.popleft() for _ in range(min(len(self._ops), self.MAX_BATCH))]
                try:
                    replies = await self._send(batch)
                except Exception as exc:  # never die: every attempt's outcome waits on this task
                    log.exception("a batch of %d writes failed", len(batch))
                    replies = [exc] * len(batch)
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)

    async def _send(self, batch: list[_Op]) -> list[Any]:
        delay = 0.1
        while True:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for call, _ in batch:
                        await self._scripts[call.script](
                            keys=call.keys, args=call.args, client=pipe
                        )
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
                self.flushes += 1
                return replies
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "redis unavailable for %d writes (%s); retrying in %.1fs",
                    len(batch),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
