"""The watch state machine against the real Redis, without gRPC: replay, live, gaps, the end.

Tasks are submitted and cancelled through the server store (the real Lua scripts); a delayed task
stays PENDING with no worker involved, so its stream is idle until the test cancels it. Gaps in
the live feed are made by detaching a watcher's inbox from the fan-out while events are stored,
as a dropped subscription would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.core import calls
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.records import EventRecord
from taskcast.core.states import State
from taskcast.server import submit
from taskcast.server.config import ServerSettings
from taskcast.server.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from taskcast.server.fanout import RESYNC, Fanout, Watcher
from taskcast.server.store import ServerStore, connect
from taskcast.server.watch import Item, KeepAlive, Trimmed, WatchSession

T = DEFAULT_TENANT  # every task here is the default tenant's


@dataclass
class Rig:
    """A store, a running fan-out and sessions over them, on the test's event loop."""

    store: ServerStore
    fanout: Fanout
    settings: ServerSettings

    def session(self, *, keepalive: float = 30.0, max_watchers: int = 100) -> WatchSession:
        # 30 s: no keep-alive (and no idle re-check) can fire within a test unless asked for.
        return WatchSession(self.store, self.fanout, keepalive=keepalive, max_watchers=max_watchers)

    async def submit(self, kind: str = "any.kind", payload: str = "{}", delay: int = 30) -> str:
        """A new task's id; with a delay it stays PENDING (idle) until cancelled."""
        request = submit.SubmitRequest(
            kind=kind, payload_json=payload, delay=(delay, 0) if delay else None
        )
        new = await submit.new_task(request, self.store, self.settings)
        record, _ = await self.store.submit(uuid.uuid4().hex, new)
        return record.id

    @contextlib.asynccontextmanager
    async def cut_off(self, task_id: str) -> AsyncIterator[None]:
        """The one live event published inside passes the task's watchers by: a gap in the live
        feed. A probe watcher shows when the fan-out's reader has passed it."""
        watchers = self.fanout.watchers.pop(task_id)
        with self.fanout.watch(task_id) as probe:
            yield
            await asyncio.wait_for(probe.queue.get(), 10)
        self.fanout.watchers[task_id] = watchers

    def inbox(self, task_id: str) -> Watcher:
        """The one watcher registered for `task_id`."""
        (watcher,) = self.fanout.watchers[task_id]
        return watcher


@pytest.fixture
async def rig(redis_server: RedisProcess, prefix: str) -> AsyncIterator[Rig]:
    settings = ServerSettings(
        redis_url=redis_server.url, redis_prefix=prefix, accept_any_kind=True, watcher_buffer=8
    )
    client = connect(settings.redis_url)
    store = ServerStore(client, settings.layout)
    fanout = Fanout(store, settings.watcher_buffer)
    fanout.start()
    await fanout.connected.wait()
    yield Rig(store, fanout, settings)
    await fanout.stop()
    await client.aclose()


def sequences(items: Sequence[Item]) -> list[int]:
    return [i.sequence for i in items if isinstance(i, EventRecord)]


def states(items: Sequence[Item]) -> list[str]:
    return [i.fields["state"] for i in items if isinstance(i, EventRecord) and i.type == "state"]


@pytest.mark.usefixtures("worker")
async def test_a_running_task_replays_then_follows_live_events_to_its_end(rig: Rig) -> None:
    task_id = await rig.submit("test.block", '{"seconds": 30}', delay=0)
    stream = rig.session().stream(task_id, 0, T)
    seen: list[Item] = []
    async with contextlib.aclosing(stream):
        async for item in stream:
            seen.append(item)
            if isinstance(item, EventRecord) and item.type == "progress":
                break  # the handler now blocks until cancelled
        await rig.store.cancel(task_id, "enough", T)  # the end arrives live
        seen += [item async for item in stream]
    assert sequences(seen) == list(range(1, len(seen) + 1))
    assert states(seen) == ["PENDING", "RUNNING", "CANCELLED"]
    last = seen[-1]
    assert isinstance(last, EventRecord) and last.terminal
    assert (await rig.store.mark(task_id)) == (State.CANCELLED, last.sequence)


async def test_a_finished_task_replays_and_ends_a_cursor_at_the_end_gets_nothing(
    rig: Rig,
) -> None:
    task_id = await rig.submit()
    await rig.store.cancel(task_id, "no", T)
    session = rig.session()
    items = [i async for i in session.stream(task_id, 0, T)]
    assert sequences(items) == [1, 2] and states(items) == ["PENDING", "CANCELLED"]
    assert [i async for i in session.stream(task_id, 2, T)] == []
    assert [i async for i in session.stream(task_id, 1, T)] == items[1:]
    assert rig.fanout.count == 0 and task_id not in rig.fanout.watchers


@pytest.mark.parametrize("after", [-1, 3, 2**62])
async def test_a_cursor_before_zero_or_past_the_last_event_is_refused(rig: Rig, after: int) -> None:
    task_id = await rig.submit()
    with pytest.raises(InvalidArgument) as info:
        _ = [i async for i in rig.session().stream(task_id, after, T)]
    assert [f for f, _ in info.value.violations] == ["after_sequence"]
    assert rig.fanout.count == 0


async def test_an_unknown_task_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        _ = [i async for i in rig.session().stream(uuid.uuid4().hex, 0, T)]


async def test_trimmed_history_is_announced_before_what_is_left(rig: Rig) -> None:
    task_id = await rig.submit()
    await rig.store.cancel(task_id, "no", T)
    await rig.store.client.xtrim(rig.store.layout.events(task_id), minid="2-0", approximate=False)
    items = [i async for i in rig.session().stream(task_id, 0, T)]
    assert items[0] == Trimmed(task_id, 2)
    assert sequences(items) == [2]
    # A cursor past the trimmed part needs no notice.
    assert [i async for i in rig.session().stream(task_id, 1, T)] == items[1:]


async def test_an_idle_stream_yields_keep_alives_until_the_end(rig: Rig) -> None:
    task_id = await rig.submit()
    stream = rig.session(keepalive=0.05).stream(task_id, 0, T)
    seen: list[Item] = []
    async with contextlib.aclosing(stream):
        async for item in stream:
            seen.append(item)
            if sum(isinstance(i, KeepAlive) for i in seen) == 3:
                break
        await rig.store.cancel(task_id, "no", T)
        seen += [item async for item in stream]
    assert sequences(seen) == [1, 2]
    assert all(i.task_id == task_id for i in seen if isinstance(i, KeepAlive))
    assert isinstance(seen[1], KeepAlive)
    assert isinstance(seen[-1], EventRecord) and seen[-1].terminal


@pytest.mark.parametrize("wake", ["resync", "later sequence", "idle check"])
async def test_events_the_live_feed_missed_are_read_from_the_stream(rig: Rig, wake: str) -> None:
    """The end is stored while the watcher is cut off from the live feed; whatever wakes it
    next (a resync, a live event past the next sequence, the idle re-check) makes it re-read."""
    task_id = await rig.submit()
    stream = rig.session(keepalive=0.05 if wake == "idle check" else 30.0).stream(task_id, 0, T)
    async with contextlib.aclosing(stream):
        first = await anext(stream)
        assert isinstance(first, EventRecord) and first.sequence == 1
        async with rig.cut_off(task_id):
            await rig.store.cancel(task_id, "no", T)  # PENDING -> CANCELLED: sequence 2
        inbox = rig.inbox(task_id)
        if wake == "resync":
            inbox.signal(RESYNC)
        elif wake == "later sequence":  # as if 2 was lost and 3 arrived: never sent itself
            inbox.offer(EventRecord(task_id, 3, {"type": "output", "text": "x"}))
        rest = [i async for i in stream if not isinstance(i, KeepAlive)]
    assert sequences(rest) == [2] and states(rest) == ["CANCELLED"]


@pytest.mark.usefixtures("worker")
async def test_a_task_compacted_mid_replay_is_marked_before_its_terminal_event(rig: Rig) -> None:
    """Compaction between two reads of a long replay leaves only the terminal event: the watcher
    is told events were trimmed (it jumped from #1000 to the end with no marker), as at the
    start of a replay."""
    task_id = await rig.submit("test.chatty", '{"n": 600}', delay=0)  # 1,203 events
    # ASYNC110: the worker is another process, and a watch of the task overflows this rig's
    # 8-event inbox: polled, with a deadline.
    async with asyncio.timeout(30):
        while (mark := await rig.store.mark(task_id)) is None or not mark[0].terminal:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    stream = rig.session().stream(task_id, 0, T)
    seen: list[Item] = []
    async with contextlib.aclosing(stream):
        async for item in stream:
            seen.append(item)
            if len(seen) == 1000:  # the admission's 500, then one read of 500 more
                break
        await rig.store._run(calls.compact(rig.store.layout, 0, 1000))  # the sweep, now
        rest = [item async for item in stream]
    assert sequences(seen) == list(range(1, 1001))
    assert [type(i).__name__ for i in rest] == ["Trimmed", "EventRecord"]
    marker, terminal = rest
    assert isinstance(marker, Trimmed) and isinstance(terminal, EventRecord)
    assert terminal.sequence == mark[1] == 1203 and terminal.terminal


async def test_a_watcher_that_fell_behind_is_told_to_resume(rig: Rig) -> None:
    task_id = await rig.submit()
    stream = rig.session().stream(task_id, 0, T)
    async with contextlib.aclosing(stream):
        await anext(stream)
        inbox = rig.inbox(task_id)
        for seq in range(2, 2 + rig.settings.watcher_buffer + 1):  # one more than fits
            inbox.offer(EventRecord(task_id, seq, {"type": "output"}))
        with pytest.raises(ResourceExhausted, match="after_sequence = the last sequence"):
            await anext(stream)
    assert rig.fanout.count == 0


async def test_a_stopping_server_tells_watchers_to_resume_elsewhere(rig: Rig) -> None:
    task_id = await rig.submit()
    stream = rig.session().stream(task_id, 0, T)
    async with contextlib.aclosing(stream):
        await anext(stream)
        await rig.fanout.stop()
        with pytest.raises(Unavailable, match="shutting down"):
            await anext(stream)


async def test_watchers_past_the_limit_are_refused(rig: Rig) -> None:
    task_id = await rig.submit()
    session = rig.session(max_watchers=1)
    first = session.stream(task_id, 0, T)
    async with contextlib.aclosing(first):
        await anext(first)
        with pytest.raises(ResourceExhausted, match="already has 1 watchers"):
            await anext(session.stream(task_id, 0, T))
    # The slot is free again once the first stream closed.
    second = session.stream(task_id, 0, T)
    async with contextlib.aclosing(second):
        assert isinstance(await anext(second), EventRecord)


async def test_each_stream_logs_its_open_and_close_and_frees_its_slot(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await rig.submit()
    session = rig.session(max_watchers=2)
    caplog.set_level(logging.DEBUG, logger="taskcast.server")
    stream = session.stream(task_id, 0, T)
    async with contextlib.aclosing(stream):
        await anext(stream)
        assert session.open == 1
    assert session.open == 0 and rig.fanout.count == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "taskcast.server"]
    assert lines == [
        f"watch {task_id} opened after 0 (1 open)",
        f"watch {task_id} closed: cancelled (0 open)",
    ]
