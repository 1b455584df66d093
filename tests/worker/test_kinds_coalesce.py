"""OutputCoalescer: the first piece at once, then batches, in order, flushed on exit."""

from __future__ import annotations

import asyncio

import pytest

from taskcast.worker.kinds._coalesce import OutputCoalescer


class Sink:
    """Collects writes and lets a test await the n-th one."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.changed = asyncio.Event()

    async def write(self, text: str) -> None:
        self.writes.append(text)
        self.changed.set()

    async def until(self, n: int) -> None:
        while len(self.writes) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


async def test_first_piece_is_written_before_add_returns() -> None:
    sink = Sink()
    async with OutputCoalescer(sink.write, interval=60) as out:
        await out.add("a")
        assert sink.writes == ["a"]
        await out.add("b")
        await out.add("")
        await out.add("c")
        assert sink.writes == ["a"]  # within the interval: held back
    assert sink.writes == ["a", "bc"] and out.writes == 2  # leaving flushes the rest


async def test_enough_text_is_written_without_waiting_for_the_interval() -> None:
    sink = Sink()
    async with OutputCoalescer(sink.write, interval=60, max_chars=4) as out:
        await out.add("first")
        await out.add("ab")
        await out.add("cd")
        await sink.until(2)
        assert sink.writes == ["first", "abcd"]
        await out.add("e")
    assert sink.writes == ["first", "abcd", "e"]


async def test_later_pieces_follow_after_the_interval() -> None:
    sink = Sink()
    async with OutputCoalescer(sink.write, interval=0.01) as out:
        await out.add("x")
        await out.add("y")
        await sink.until(2)  # no more text needed: the timer writes it
        assert sink.writes == ["x", "y"]


async def test_cancellation_drops_what_is_pending() -> None:
    sink = Sink()

    async def body() -> None:
        async with OutputCoalescer(sink.write, interval=60) as out:
            await out.add("kept")
            await out.add("dropped")
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    await sink.until(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.writes == ["kept"]


async def test_an_error_still_flushes_then_propagates() -> None:
    sink = Sink()

    async def body() -> None:
        async with OutputCoalescer(sink.write, interval=60) as out:
            await out.add("a")
            await out.add("b")
            raise RuntimeError("upstream cut")

    with pytest.raises(RuntimeError, match="upstream cut"):
        await body()
    assert sink.writes == ["a", "b"]


async def test_a_failing_write_surfaces() -> None:
    async def broken(text: str) -> None:
        raise ConnectionError("redis gone")

    async def body() -> None:
        async with OutputCoalescer(broken, interval=0) as out:
            await out.add("a")

    with pytest.raises(ConnectionError):
        await body()
