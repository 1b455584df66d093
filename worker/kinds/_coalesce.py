"""Coalescing streamed text into few output events: the first piece at once, then batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType

__all__ = ["OutputCoalescer"]


class OutputCoalescer:
    """Turns many small pieces of text into few `write` calls, in order.

    The first piece is written before `add` returns, so time to first output is not held back.
    Later pieces are joined and written by one background writer at most once per `interval`
    seconds, or as soon as `max_chars` are waiting. Leaving the `async with` block writes what is
    left, unless the block was cancelled (a cancelled task keeps what was already written).
    """

    def __init__(
        self, write: Callable[[str], Awaitable[None]], interval: float, max_chars: int = 2048
    ) -> None:
        self._write = write
        self._interval = interval
        self._max_chars = max_chars
        self._pending: list[str] = []
        self._size = 0
        self._ready = asyncio.Event()  # something is pending
        self._full = asyncio.Event()  # enough is pending to skip the wait (or we are closing)
        self._closing = False
        self._last = 0.0
        self._started = False
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0

    async def __aenter__(self) -> OutputCoalescer:
        self._writer = asyncio.create_task(self._run(), name="taskcast-output-writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._writer is not None
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            return
        self._closing = True
        self._ready.set()
        self._full.set()
        await self._writer  # a failed write surfaces here

    async def add(self, text: str) -> None:
        """Queue `text` for output; the very first piece is written before this returns."""
        if not text:
            return
        if not self._started:
            self._started = True
            await self._emit(text)
            return
        if self._writer is not None and self._writer.done():
            await self._writer  # re-raise the writer's failure instead of buffering forever
        self._pending.append(text)
        self._size += len(text)
        self._ready.set()
        if self._size >= self._max_chars:
            self._full.set()

    async def _emit(self, text: str) -> None:
        await self._write(text)
        self.writes += 1
        self._last = asyncio.get_running_loop().time()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            wait = self._last + self._interval - loop.time()
            if wait > 0 and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._ready.clear()
            if not self._closing:
                self._full.clear()
            if text:
                await self._emit(text)
            if self._closing and not self._pending:
                return
