"""How many async attempts a worker process runs at once, and the gate its consumers fetch through.

An async attempt holds a slot from the moment a consumer fetches its message until its coroutine
has finished and its outcome is written. A consumer of a live queue fetches only as many messages
as there are free slots, so a full process leaves the queue to processes with room, instead of
hoarding messages it cannot start. Sync attempts are bounded by threads and the prefetch, as in
Dramatiq; their messages count against the slots only while fetched and not yet acknowledged.

    free = capacity - running - sum(outstanding messages of this process's queue consumers)

Delay-queue consumers are not counted: they hold future messages, not work.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Slots"]


class _Consumer(Protocol):
    @property
    def outstanding_message_count(self) -> int: ...


class Slots:
    """The slot count of one worker process; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running = 0
        self._closed = False
        self._cond = threading.Condition()
        self._fetch = threading.Lock()
        self._consumers: weakref.WeakSet[_Consumer] = weakref.WeakSet()
        self._waiters = 0  # consumers in `wait`

    def watch(self, consumer: _Consumer) -> None:
        """Count `consumer`'s fetched, unacknowledged messages as taken slots."""
        with self._cond:
            self._consumers.add(consumer)

    @property
    def held(self) -> int:
        """Messages fetched by the queue consumers and not yet acknowledged."""
        with self._cond:
            consumers = list(self._consumers)
        return sum(c.outstanding_message_count for c in consumers)

    def free(self) -> int:
        """Slots nobody holds (0 once closed)."""
        if self._closed:
            return 0
        return max(0, self.capacity - self.running - self.held)

    @contextlib.contextmanager
    def fetching(self) -> Iterator[int]:
        """Hold the fetch gate: yields the free slots; fetch at most that many inside."""
        with self._fetch:
            yield self.free()

    def take(self) -> None:
        """An async attempt starts running (its message is still counted until acknowledged)."""
        with self._cond:
            self.running += 1

    def give(self) -> None:
        """An async attempt ended; wake a consumer waiting for room."""
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def notify(self) -> None:
        """A fetched message was acknowledged (its slot may be free again): wake waiters.

        Called after the acknowledgement changed the count; a waiter counts itself in before it
        looks at the count (`wait`), so either it sees the free slot or this sees the waiter.
        """
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for a slot to free up."""
        with self._cond:
            self._waiters += 1
            try:
                if self.free() <= 0:
                    self._cond.wait(timeout)
            finally:
                self._waiters -= 1

    def close(self) -> None:
        """Fetch nothing more (shutdown): running attempts finish, nothing new starts."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
