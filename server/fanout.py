"""Live events for every watcher of this process from one Redis subscription.

Each watcher owns a bounded queue. The reader never waits for a watcher: when a queue is full the
watcher is marked `overflowed` and told (by its handler) to resume from its last sequence. When
the subscription drops (and when redis-py re-makes it by itself), every watcher is told to
`resync`: it re-reads the task's stream from its last sequence, so an event published while
nobody listened is still delivered.

Only watched tasks' events are published (`watched` in core/lua/_lib.lua). A watch registers its
interest in Redis before it reads the stored events (admit.lua, or `ServerStore.watch` for a
group's tasks); this process renews the interest of every task it routes every third of
`interest` seconds, in one pipeline, and once more whenever the subscription is (re)made, before
the resync: a Redis that lost the registration (a failover) has it again before anyone re-reads.
A server that dies stops renewing, and its interest lapses by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Final, TypeAlias

import redis.asyncio as aredis

from taskcast.core.records import EventRecord, live_task_id
from taskcast.server.store import ServerStore

log = logging.getLogger("taskcast.server")

RESYNC: Final = "resync"
SHUTDOWN: Final = "shutdown"
Item: TypeAlias = EventRecord | str


class Watcher:
    """One watch stream's inbox: a WatchTask's, or a WatchTasks' for every task of its group."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue(size)
        self.overflowed = False
        # The tasks it is registered for, each once (a list: 64 bytes for a WatchTask's one id
        # against a set's 216, per stream, where 10,000 streams are measured for memory).
        self.task_ids: list[str] = []

    def offer(self, item: Item) -> None:
        """Deliver without waiting; a full inbox marks the watcher as overflowed."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    def signal(self, item: str) -> None:
        """Deliver a control item (resync, shutdown), making room for it if needed."""
        if self.queue.full():
            self.overflowed = True
            self.queue.get_nowait()
        self.queue.put_nowait(item)


class Fanout:
    """Routes the live channel to the watchers registered for each task."""

    def __init__(self, store: ServerStore, buffer: int, interest: float = 30.0) -> None:
        self.store = store
        self.client = store.client
        self.channel = store.layout.live_channel()
        self.buffer = buffer
        self.interest_ms = max(int(interest * 1000), 3)  # how long a registration lasts
        self.watchers: dict[str, set[Watcher]] = {}
        self.count = 0
        self.connected = asyncio.Event()
        self.renewals = 0  # completed renewals of every routed task's interest (tests await it)
        self._tasks: list[asyncio.Task[None]] = []
        self._resyncs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the reader and the renewal tasks on the running loop."""
        self._tasks = [
            asyncio.create_task(self._run(), name="taskcast-fanout"),
            asyncio.create_task(self._renew_forever(), name="taskcast-interest"),
        ]

    async def stop(self) -> None:
        """Tell every watcher the server is going away, then stop reading."""
        for group in self.watchers.values():
            for w in group:
                w.signal(SHUTDOWN)
        for task in [*self._tasks, *self._resyncs]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def renew(self) -> None:
        """Renew the interest of every task this process routes (one pipeline); lapsed
        interest is forgotten even when there is none to renew."""
        await self.store.watch(list(self.watchers), self.interest_ms)
        self.renewals += 1

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interest_ms / 3000)  # a period, not a wait for an event
            try:
                await self.renew()
            except Exception as exc:  # Redis away: the next period tries again
                log.warning("could not renew the interest of live watches (%s)", exc)

    @contextlib.contextmanager
    def watch(self, *task_ids: str) -> Iterator[Watcher]:
        """Register a watcher of these tasks (`follow` adds more) for the duration of a stream."""
        w = Watcher(self.buffer)
        self.count += 1
        try:
            for task_id in task_ids:
                self.follow(w, task_id)
            yield w
        finally:
            self.count -= 1
            for task_id in w.task_ids:
                group = self.watchers.get(task_id)
                if group is not None:
                    group.discard(w)
                    if not group:
                        del self.watchers[task_id]

    def follow(self, w: Watcher, task_id: str) -> None:
        """Route `task_id`'s live events to `w` too (a task of a group watch); once per task."""
        w.task_ids.append(task_id)
        self.watchers.setdefault(task_id, set()).add(w)

    def _broadcast(self, item: str) -> None:
        for group in self.watchers.values():
            for w in group:
                w.signal(item)

    async def _resync(self) -> None:
        """After a new subscription: interest registered again first (a failover may have lost
        it), then every watcher re-reads what was published while nobody listened."""
        try:
            await self.renew()
        except Exception as exc:  # the watchers' re-reads will meet the same Redis
            log.warning("could not renew the interest of live watches (%s)", exc)
        self._broadcast(RESYNC)

    def _reconnected(self, connection: object) -> None:
        """redis-py re-made the subscription by itself (a dropped connection, a failover):
        nothing reached `_run`, so resync from here, on a task of its own (this runs inside
        redis-py's connect)."""
        task = asyncio.get_running_loop().create_task(self._resync())
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.client.pubsub() as sub:
                    await sub.subscribe(self.channel)
                    conn = sub.connection  # made by the subscribe
                    if conn is None:
                        raise RuntimeError("subscribed without a connection")
                    # After redis-py's own callback, which subscribes again on a reconnect.
                    conn.register_connect_callback(self._reconnected)
                    try:
                        await self._resync()
                        self.connected.set()
                        delay = 0.1
                        await self._read(sub)
                    finally:  # the connection goes back to the pool, for other uses
                        conn.deregister_connect_callback(self._reconnected)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: log, back off, resubscribe, resync
                log.warning("live event subscription lost (%s); reconnecting in %.1fs", exc, delay)
                self._broadcast(RESYNC)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read(self, sub: aredis.client.PubSub) -> None:
        while True:
            msg = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None or msg["type"] != "message":
                continue
            task_id, rest = live_task_id(msg["data"])
            group = self.watchers.get(task_id)
            if not group:
                continue  # nobody here watches it: not even decoded
            try:
                event = EventRecord.from_live(task_id, rest)
            except ValueError:
                log.warning("ignoring malformed live event %r", msg["data"][:200])
                continue
            for w in tuple(group):
                w.offer(event)
