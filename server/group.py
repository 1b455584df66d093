"""One WatchTasks stream: the events of every task carrying a label, as domain items.

The group is the label's index (`Layout.index_label`) of the caller's tenant, in creation order:
another tenant's task with the same label is in another index, so it never joins. The stream
registers one fan-out inbox for all its tasks, replays each task's stored events after its cursor,
then takes live events, keeping per task the last sequence sent: an event at or before it is
skipped, one past the next is a gap and that task's stream is re-read from it (the same rule as a
WatchTask, per task). Tasks that join the group later are found by re-reading the index from the
newest creation time known, every `POLL_S`; each is then replayed from its first event. Interest in
each task's live events is registered as it joins, before its replay (`ServerStore.watch`): only
watched tasks' events are published, and a new task's are not until then. An idle
stream re-reads the marks (state, last sequence) of its unfinished tasks every `keepalive` seconds,
catches up any that moved while the live feed said nothing, and sends a KeepAlive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.records import EventRecord
from taskcast.core.states import State
from taskcast.server import metrics, validation
from taskcast.server.errors import FailedPrecondition, InvalidArgument
from taskcast.server.fanout import Fanout, Watcher
from taskcast.server.store import ServerStore
from taskcast.server.watch import Item, KeepAlive, Trimmed, WatchSession, check_inbox

MAX_TASKS = 10_000  # tasks per group watch, and cursors per request
POLL_S = 1.0  # how often the label index is re-read for tasks that joined the group


@dataclass(frozen=True)
class GroupRequest:
    """A WatchTasksRequest as plain values."""

    label: str  # "key=value"
    tenant: str = DEFAULT_TENANT  # whose label index is the group (another's tasks never join)
    cursors: dict[str, int] = field(default_factory=dict)  # task id -> last sequence received
    end_when_done: bool = False


Mark = tuple[State, int] | None  # a task's state and last sequence; None when gone
Joined = list[tuple[str, tuple[State, int]]]  # tasks taken into the group, with their marks


def check(r: GroupRequest) -> None:
    """InvalidArgument naming every bad field of the request."""
    p = validation.Problems()
    key, sep, value = r.label.partition("=")
    if not sep:
        p.add("label", "is required, as key=value (e.g. batch=42)")
    else:
        validation.labels({key: value}, p, "label")
    if len(r.cursors) > MAX_TASKS:
        p.add("cursors", f"has {len(r.cursors)} entries; at most {MAX_TASKS:,}")
    for task_id, after in list(r.cursors.items())[:MAX_TASKS]:
        if not task_id or len(task_id) > 128 or not task_id.isprintable():
            p.add("cursors.task_id", "must be 1-128 printable characters")
        if after < 0:
            p.add(f"cursors[{task_id[:64]}].after_sequence", "must be 0 or more")
    p.check()


async def stream(session: WatchSession, r: GroupRequest) -> AsyncGenerator[Item, None]:
    """Every event of every task of the group after its cursor, counted as one watcher.

    Raises:
        InvalidArgument: A bad label or cursor (see `check`), or a cursor past its task's end.
        FailedPrecondition: The group has (or grows to) more than `MAX_TASKS` tasks.
        ResourceExhausted: The server's watcher limit, or the stream fell behind.
        Unavailable: The server is shutting down.
    """
    check(r)
    how = f" with {len(r.cursors)} cursors"
    counted = session.counted(f"label {r.label}", how, _items(session, r))
    async with contextlib.aclosing(counted):  # its slot freed when this stream closes
        async for item in counted:
            yield item


async def _items(session: WatchSession, r: GroupRequest) -> AsyncGenerator[Item, None]:
    if r.cursors:
        metrics.WATCH_RESUMED.inc()
    metrics.WATCH_OPEN.inc()
    try:
        with session.fanout.watch() as inbox:
            group = GroupStream(session.store, session.fanout, inbox, r, session.keepalive)
            async for item in group.items(await group.start()):
                yield item
    finally:
        metrics.WATCH_OPEN.dec()


class GroupStream:
    """The items of one group watch; `items()` once."""

    def __init__(
        self, store: ServerStore, fanout: Fanout, inbox: Watcher, r: GroupRequest, keepalive: float
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.inbox = inbox
        self.r = r
        self.keepalive = keepalive
        mine = store.layout.of(r.tenant)  # the caller's tenant's index: only its tasks join
        self.index = mine.index_label(mine.label_member(*r.label.split("=", 1)))
        self.last: dict[str, int] = {}  # per task of the group: the last sequence sent
        self.ended: set[str] = set()  # tasks whose terminal event is their last one sent
        self.since = 0.0  # the newest creation time (index score) read

    async def start(self) -> Joined:
        """The group now, its cursors checked, each task's live events routed to the inbox."""
        return await self._join(await self._members(0.0))

    async def items(self, joined: Joined) -> AsyncIterator[Item]:
        """Replay the `joined` tasks, then live events, new members and keep-alives."""
        async for item in self._replay_all(joined):
            yield item
        next_poll = quiet_since = time.monotonic()
        next_poll += POLL_S
        while not self._done():
            live = await self._next(next_poll - time.monotonic())
            if live is None:  # time to look for new members (however busy the stream is)
                next_poll = time.monotonic() + POLL_S
                idle = time.monotonic() - quiet_since >= self.keepalive
                async for item in self._poll(idle):
                    quiet_since = time.monotonic()
                    yield item
                continue
            check_inbox(live, self.inbox)
            # RESYNC: the subscription was re-made, anything may have been missed
            found = self._catch_up(list(self.last)) if isinstance(live, str) else self._live(live)
            async for item in found:
                quiet_since = time.monotonic()
                yield item

    async def _next(self, wait: float) -> EventRecord | str | None:
        """The next inbox item, or None once `wait` seconds passed without one."""
        if wait <= 0:
            return None
        try:
            async with asyncio.timeout(wait):  # no Task per wait
                return await self.inbox.queue.get()
        except TimeoutError:
            return None

    async def _members(self, since: float) -> list[tuple[str, float]]:
        """Index entries created at or after `since`, oldest first; FailedPrecondition when the
        group would pass `MAX_TASKS`."""
        reply = await self.store.client.zrangebyscore(
            self.index, since, "+inf", start=0, num=MAX_TASKS + 1, withscores=True
        )
        rows = [(m.decode(), s) for m, s in cast("list[tuple[bytes, float]]", reply)]
        fresh = [(m, s) for m, s in rows if m not in self.last]
        if len(self.last) + len(fresh) > MAX_TASKS:
            raise FailedPrecondition(
                f"the group {self.r.label!r} has more than {MAX_TASKS:,} tasks, the most one "
                "WatchTasks follows; watch a narrower label",
                subject=f"label/{self.r.label}",
                type_="GROUP_SIZE",
            )
        return fresh

    async def _join(self, rows: list[tuple[str, float]]) -> Joined:
        """Take these tasks into the group (the expired left out), cursors checked."""
        # Interest in their live events registered before their replay, the marks read after it
        # in the same script: every later event is published.
        marks = await self.store.watch([m for m, _ in rows], self.fanout.interest_ms, marks=True)
        joined: Joined = []
        for (task_id, score), mark in zip(rows, marks, strict=True):
            self.since = max(self.since, score)
            if mark is None:
                continue  # expired: its index entry is stale
            after = self.r.cursors.get(task_id, 0)
            if after > mark[1]:
                raise InvalidArgument(  # named as `check` names a negative one
                    [
                        (
                            f"cursors[{task_id[:64]}].after_sequence",
                            f"is past the task's last event ({mark[1]})",
                        )
                    ]
                )
            self.last[task_id] = after
            self.fanout.follow(self.inbox, task_id)  # before its replay: nothing falls between
            joined.append((task_id, mark))
        return joined

    async def _marks(self, task_ids: list[str]) -> list[Mark]:
        async with self.store.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.store.layout.task(task_id), "state", "seq")
            replies = await pipe.execute()
        return [
            None if state is None else (State(state.decode()), int(seq or 0))
            for state, seq in replies
        ]

    async def _replay_all(self, joined: Joined) -> AsyncIterator[Item]:
        for task_id, mark in joined:
            async for item in self._replay(task_id):
                yield item
            if mark[0].terminal and mark[1] <= self.last[task_id]:
                self.ended.add(task_id)  # ended at or before its cursor

    async def _replay(self, task_id: str) -> AsyncIterator[Item]:
        """The stored events of `task_id` after the last one sent."""
        last = self.last[task_id]
        async for record in self.store.events_after(task_id, last):
            if record.sequence > last + 1:  # trimmed, or compacted mid-replay (watch.py)
                yield Trimmed(task_id, record.sequence)
            last = record.sequence
            yield self._sent(record)

    def _sent(self, record: EventRecord) -> EventRecord:
        self.last[record.task_id] = record.sequence
        if record.terminal:
            self.ended.add(record.task_id)
        else:
            self.ended.discard(record.task_id)  # a RetryTask started a new series
        return record

    async def _live(self, event: EventRecord) -> AsyncIterator[Item]:
        last = self.last.get(event.task_id)
        if last is None or event.sequence <= last:
            return  # not (or no longer) in the group, or sent already
        if event.sequence > last + 1:
            async for item in self._replay(event.task_id):  # a gap: the stream has the rest
                yield item
            return
        yield self._sent(event)

    async def _catch_up(self, task_ids: list[str]) -> AsyncIterator[Item]:
        for task_id in task_ids:
            async for item in self._replay(task_id):
                yield item

    async def _poll(self, idle: bool) -> AsyncIterator[Item]:
        """New members replayed; when `idle` and none came, moved tasks caught up, else a
        KeepAlive."""
        sent = False
        async for item in self._replay_all(await self._join(await self._members(self.since))):
            sent = True
            yield item
        if not idle or sent:
            return
        open_ids = [t for t in self.last if t not in self.ended]
        marks = await self._marks(open_ids)
        moved = [t for t, m in zip(open_ids, marks, strict=True) if m and m[1] > self.last[t]]
        async for item in self._catch_up(moved):
            sent = True
            yield item
        if not sent:
            yield KeepAlive("", time.time_ns())

    def _done(self) -> bool:
        return self.r.end_when_done and bool(self.last) and self.ended >= set(self.last)
