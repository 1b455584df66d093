"""One WatchTask stream as domain items: stored events replayed, then live ones, then the end.

A session registers its fan-out inbox, then is admitted in one round trip (admit.lua: the owner
checked, interest in the task's live events registered so that they are published, the stored
events after the caller's cursor read), replays those, then takes live events from its inbox.
Whenever the live feed may have a gap (a sequence jumps, the subscription was re-made, or an idle
period ends with a newer sequence stored), it re-reads the stored stream from its last sequence
instead. An idle stream yields a `KeepAlive` every `keepalive` seconds. The iteration ends after
the terminal event, or at once when the caller has seen it already; a terminal event that a
RetryTask has since followed with a new series is not the end.
Nothing here knows protobuf: the servicer converts each item (server/convert.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from taskcast.core.calls import Admission
from taskcast.core.records import EventRecord
from taskcast.core.states import State
from taskcast.server import metrics
from taskcast.server.errors import InvalidArgument, ResourceExhausted, Unavailable
from taskcast.server.fanout import SHUTDOWN, Fanout, Watcher
from taskcast.server.store import ServerStore

log = logging.getLogger("taskcast.server")


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new for a while; the stream is alive. Not stored, so it has no sequence."""

    task_id: str
    time_ns: int  # this server's clock: only a liveness stamp, never compared with stored times


@dataclass(frozen=True)
class Trimmed:
    """Events before `first_available` are gone (retention trimmed them): the replay starts
    there instead of right after the caller's cursor."""

    task_id: str
    first_available: int


Item: TypeAlias = EventRecord | KeepAlive | Trimmed


class WatchSession:
    """Opens watch streams for one server process: limits checked, then `Item`s until the end."""

    def __init__(
        self, store: ServerStore, fanout: Fanout, *, keepalive: float, max_watchers: int
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.keepalive = keepalive
        self.max_watchers = max_watchers
        # Streams admitted and not yet ended, counted from admission, before the first await:
        # checking `fanout.count` (registered only after the task was read) let 4 of 4
        # simultaneous opens through a limit of 3.
        self.open = 0

    async def stream(
        self,
        task_id: str,
        after: int,
        tenant: str,
        started: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[Item, None]:
        """Every event of `tenant`'s task `task_id` with a sequence greater than `after`, up to
        the terminal one.

        `started` is awaited once the stream is admitted and the task and cursor checked, before
        the first item: the HTTP gateway sends its response headers there, so every refusal
        below comes before them (a 404 for an unknown task, not an empty stream).

        Raises:
            InvalidArgument: `after` is negative or past the task's last event.
            ResourceExhausted: this process has `max_watchers` streams open, or the watcher fell
                behind the live events (its inbox overflowed).
            NotFound: the task is unknown, expired or another tenant's.
            Unavailable: the server is shutting down.
        """
        if after < 0:
            raise InvalidArgument([("after_sequence", "must be 0 or more")])
        counted = self.counted(
            task_id, f" after {after}", self._admitted(task_id, after, tenant, started)
        )
        async with contextlib.aclosing(counted):  # its slot freed when this stream closes
            async for item in counted:
                yield item

    async def counted(
        self, what: str, how: str, items: AsyncGenerator[Item, None]
    ) -> AsyncGenerator[Item, None]:
        """`items`, as one stream of `what` (logged with `how`) counted against `max_watchers`
        (a group watch counts once).

        Raises:
            ResourceExhausted: this process has `max_watchers` streams open.
        """
        # Check and reserve in one step with no await between: the event loop cannot run
        # another stream's admission in the middle, so the limit holds under any burst.
        if self.open >= self.max_watchers:
            raise ResourceExhausted(
                f"this server already has {self.open} watchers; retry later or use another replica",
                retry_after=1.0,
            )
        self.open += 1
        log.debug("watch %s opened%s (%d open)", what, how, self.open)
        ended = "cancelled"  # by the caller, or a BaseException such as GeneratorExit
        try:
            # aclosing: a cancelled stream leaves the fan-out at once, not when GC finds it.
            async with contextlib.aclosing(items):
                async for item in items:
                    yield item
            ended = "ended"
        except Exception as exc:
            ended = type(exc).__name__
            raise
        finally:
            self.open -= 1
            log.debug("watch %s closed: %s (%d open)", what, ended, self.open)

    async def _admitted(
        self,
        task_id: str,
        after: int,
        tenant: str,
        started: Callable[[], Awaitable[None]] | None,
    ) -> AsyncGenerator[Item, None]:
        """`stream` once its slot is reserved: the owner and cursor checked, then the items."""
        with self.fanout.watch(task_id) as inbox:  # routed here before interest is registered
            # One round trip (admit.lua): NOT_FOUND before the stream starts, interest in the
            # task's live events registered, then its first events after the cursor. Four
            # fields of the hash, not the whole task: a payload or result may be a megabyte.
            first = await self.store.admit(task_id, tenant, after, self.fanout.interest_ms)
            if after > first.sequence:
                # Sequences only come from events this task emitted: a larger cursor would skip
                # events (the terminal one too) and wait for ever, so it is refused at once.
                raise InvalidArgument(
                    [
                        (
                            "after_sequence",
                            f"is past the task's last event ({first.sequence}); use 0 or a "
                            "sequence this task's events carried",
                        )
                    ]
                )
            if started is not None:
                await started()
            if after:
                metrics.WATCH_RESUMED.inc()
            metrics.WATCH_OPEN.inc()
            sent_end = False  # a stream closed after its terminal event did not end early
            try:
                async for item in self._items(task_id, after, inbox, first):
                    sent_end = isinstance(item, EventRecord) and item.terminal
                    yield item
            except BaseException as exc:
                if not sent_end:
                    metrics.WATCH_ENDED_EARLY.labels(early(exc)).inc()
                raise
            finally:
                metrics.WATCH_OPEN.dec()

    async def _items(
        self, task_id: str, last: int, inbox: Watcher, first: Admission
    ) -> AsyncIterator[Item]:
        """Replay, then live events; re-read the stream whenever the live feed may have a gap."""
        # While the replay is the admission's own (read in its script), so is the mark: no read.
        known = (first.state, first.sequence) if first.complete else None
        replay = self._admitted_replay(task_id, last, first)
        catch_up = True
        while True:
            if catch_up:
                catch_up = False
                async for item in replay:
                    yield item
                    if isinstance(item, EventRecord):
                        last = item.sequence
                        if item.terminal and _ended(known or await self.store.mark(task_id), last):
                            return
                if _ended(known or await self.store.mark(task_id), last):
                    return  # expired under us, or the caller has seen the end already
                known = None
            try:
                async with asyncio.timeout(self.keepalive):  # no Task per wait
                    live = await inbox.queue.get()
            except TimeoutError:
                # Idle: a cheap check that nothing was missed, else a keep-alive.
                mark = await self.store.mark(task_id)
                if _ended(mark, last):
                    return  # expired, or finished with nothing left to send
                if mark is not None and mark[1] > last:
                    catch_up, replay = True, self._replay(task_id, last)
                else:
                    yield KeepAlive(task_id, time.time_ns())
                continue
            check_inbox(live, inbox)
            if isinstance(live, str):  # RESYNC: the subscription was (re)made
                catch_up, replay = True, self._replay(task_id, last)
                continue
            if live.sequence <= last:
                if live.terminal and await self._ends(task_id, last):
                    return  # the end, at or before the cursor
                continue  # already sent during replay
            if live.sequence > last + 1:
                # a gap in the live feed: the stream has the missing events
                catch_up, replay = True, self._replay(task_id, last)
                continue
            last = live.sequence
            yield live
            if live.terminal:
                return  # live, so the newest: a later retry's events need a resumed watch

    async def _ends(self, task_id: str, terminal: int) -> bool:
        """Whether the terminal event `terminal` is the task's end: a RetryTask may have started
        a new attempt series after it, whose events continue the same sequence. One HMGET per
        terminal event seen, so at most one per series."""
        return _ended(await self.store.mark(task_id), terminal)

    async def _admitted_replay(
        self, task_id: str, last: int, first: Admission
    ) -> AsyncIterator[Item]:
        """The admission's events, then the rest of the stream when they were not all of it."""
        if first.events and first.events[0].sequence > last + 1:
            yield Trimmed(task_id, first.events[0].sequence)
        for record in first.events:
            yield record
        if not first.complete:
            after = first.events[-1].sequence if first.events else last
            async for item in self._replay(task_id, after):
                yield item

    async def _replay(self, task_id: str, last: int) -> AsyncIterator[Item]:
        async for record in self.store.events_after(task_id, last):
            # A gap: trimmed before the replay, or compacted between two of its reads (then the
            # terminal event, kept in the hash, is all that is left).
            if record.sequence > last + 1:
                yield Trimmed(task_id, record.sequence)
            last = record.sequence
            yield record


def _ended(mark: tuple[State, int] | None, last: int) -> bool:
    """Whether the task expired, or ended with an event at or before `last`."""
    return mark is None or (mark[0].terminal and mark[1] <= last)


def early(exc: BaseException) -> str:
    """Why a stream ended before its task's end, as the `reason` label."""
    if isinstance(exc, Unavailable):
        return "shutdown"
    if isinstance(exc, ResourceExhausted):
        return "overflow"  # the watcher fell behind the live events
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "client_gone"
    return "error"  # Redis failed mid-stream, or a bug: the RPC counts say which code


def check_inbox(item: object, inbox: Watcher) -> None:
    """Raise when the server is stopping or the watcher missed live events."""
    if item == SHUTDOWN:
        raise Unavailable(
            "server shutting down; watch again with after_sequence = the last sequence "
            "you received",
            0.1,
        )
    if inbox.overflowed:
        raise ResourceExhausted(
            "watcher fell behind the live events; watch again with after_sequence = the "
            "last sequence you received",
            0.1,
        )
