"""The worker's transport: the Dramatiq RedisBroker and consumer subclasses, which rely on
Dramatiq 2.2's private Redis code (hence `dramatiq>=2.2,<2.3` in pyproject.toml).

Dramatiq's key names are `core/mqlayout.py`'s; the wake-up rule is `wake()` in `core/lua/_lib.lua`,
run here by `route.lua` for Dramatiq's own enqueues. Which waiting message a fetch takes
(priorities and fair share) is `core/lua/_fetch.lua`, inserted into Dramatiq's own fetch script.
docs/architecture.md says what another broker would have to provide.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.redis import _scripts as dramatiq_scripts
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from taskcast.core import calls, mqlayout, scripts
from taskcast.core.capacity import LIVE_MS
from taskcast.core.records import TaskError
from taskcast.worker.slots import Slots
from taskcast.worker.store import WorkerStore

log = logging.getLogger("taskcast.worker")

HAND_BACK_DELAY_MS = 100  # a kind another live worker serves: back on the queue soon
HAND_BACK_MAX_DELAY_MS = 5_000  # a kind no live worker serves: the longest wait between tries
ACKED = "tc_acked"  # set on a delivered message's options once `begin` acknowledged it
FULL_BACKOFF_MS = 20  # the longest pause of a delay queue's consumer whose prefetch is full


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, with these changes (the body follows `_RedisConsumer.__next__`
    of Dramatiq 2.2; docs/architecture.md, "When a consumer looks"):

    - an idle one blocks on the queue's wake-up list (BLPOP, up to the poll interval) instead of
      sleeping with a growing backoff: a message enqueued (`wake()` in _lib.lua pushes a token)
      is picked up at once, and a fetch that leaves messages behind passes a token on;
    - one whose prefetch is full waits for the acknowledgements that free half of it, instead of
      sleeping with a backoff that grows to the poll interval;
    - on a live queue it fetches only as many messages as the process has free slots, and waits
      for a slot when it has none, so it never hoards work an idle process could run;
    - a message of a kind this process does not serve is handed back, never dead-lettered as
      Dramatiq does with an "undefined actor" (in a rolling deploy, old workers meet new kinds);
    - an idle delay-queue consumer wakes when the earliest message it holds is due, not at the
      next poll, so a rate limit's wait is kept to the millisecond (Dramatiq moves due messages
      only between two returns of `__next__`; with the 100 ms poll, 50 ms steps of a 20/s limit
      came back up to 100 ms late).
    """

    broker: Broker

    def __init__(self, broker: Broker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.slots = None if mqlayout.is_delayed(queue_name) else broker.slots
        if self.slots is not None:
            self.slots.watch(self)
        self.etas: list[int] = []  # a delay queue's: etas (worker ms) of messages it handed on
        self._acked = threading.Event()  # set by an acknowledgement while `_waiting`
        self._waiting = False

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    if self.slots is not None and message.actor_name not in self.broker.actors:
                        # (a delayed message is only moved on to its queue: any process may)
                        self.broker.hand_back(self.queue_name, message)
                        continue
                    self.queued_message_ids.add(message.message_id)
                    if self.slots is None and isinstance(message.options.get("eta"), int):
                        heapq.heappush(self.etas, message.options["eta"])
                    return MessageProxy(message)
                except IndexError:
                    if self._fetch():
                        continue
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand back messages fetched and not started (a graceful stop): a live queue's go back
        to their tasks' buckets, keeping their priority and fair share (requeue.lua)."""
        if self.slots is None:  # a delay queue's: Dramatiq's own requeue
            super().requeue(messages)
            return
        pairs = [(m.options["redis_message_id"], m.message_id) for m in messages]
        if pairs:
            self.broker.requeue_fetched(self.queue_name, pairs)

    def ack(self, message: MessageProxy) -> None:
        """Dramatiq's ack, unless `begin` already did it in its own script (`Broker.ack_of`).

        Called by the worker thread that processed the message: the room it frees ends a wait
        of this consumer for room (`_fetch`) and of any consumer waiting for a slot.
        """
        try:
            if message.options.pop(ACKED, False):
                self.queued_message_ids.discard(message.message_id)
            else:
                super().ack(message)
        finally:
            self._freed()

    def nack(self, message: MessageProxy) -> None:
        """Dramatiq's nack (a dead letter); frees room as `ack` does."""
        try:
            super().nack(message)
        finally:
            self._freed()

    def _freed(self) -> None:
        # Only when someone waits: a busy queue acknowledges thousands of messages a second.
        if self._waiting:
            self._acked.set()
        if self.slots is not None:
            self.slots.notify()

    def _fetch(self) -> bool:
        """Fetch what this process has room for; wait (up to the poll interval) when empty."""
        room = self.prefetch - self.outstanding_message_count
        if self.slots is None:
            if room > 0:
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
        else:
            with self.slots.fetching() as free:
                room = min(room, free)
                if room > 0:
                    self.message_cache = self.broker.do_fetch(self.queue_name, room)
            if room <= 0 and self.slots.free() <= 0:
                self.slots.wait(self.timeout / 1000)  # full: leave the tokens to others
                return False
        if room <= 0:
            # Prefetch full: leave the tokens to consumers that can take work, and wait for room.
            # A live queue's messages are acknowledged by the worker threads (`ack`), which wake
            # this wait. A delay queue's are acknowledged by Dramatiq's consumer thread itself
            # when it moves a due message on, between two returns of `__next__`: return soon.
            if self.slots is not None:
                self._wait_for_room()
            else:
                self.misses, backoff = compute_backoff(self.misses, max_backoff=FULL_BACKOFF_MS)
                time.sleep(backoff / 1000)
            return False
        if self.message_cache:
            return True
        # Empty: wait for a token. Stale tokens only cause an empty fetch.
        wait = self._until_due()
        if wait > 0:
            self.broker.client.blpop([self.broker.mq.wake(self.queue_name)], timeout=wait)
        return False

    def _wait_for_room(self) -> None:
        """Wait (up to the poll interval) until half the prefetch is free again.

        Half, not one: a busy queue then fetches several messages per round trip, while the
        worker threads still have the other half to work on; waking on every acknowledgement
        would fetch one message per task.
        """
        low = max(1, self.prefetch // 2)
        deadline = time.monotonic() + self.timeout / 1000
        self._waiting = True  # before counting: an acknowledgement from now on sets the event
        try:
            while self.prefetch - self.outstanding_message_count < low:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._acked.wait(left)
                self._acked.clear()  # then count again: an acknowledgement since is not lost
        finally:
            self._waiting = False

    def _until_due(self) -> float:
        """Seconds to block: the poll interval, or less when a held delayed message is due."""
        now = time.time() * 1000  # Dramatiq judges etas by this process's clock too
        while self.etas and self.etas[0] <= now:
            heapq.heappop(self.etas)
        poll = float(self.timeout)
        if not self.etas:
            return poll / 1000
        # Redis takes a BLPOP timeout to the millisecond; 0 would block forever.
        return max(0.001, min(poll, self.etas[0] - now) / 1000)


class Broker(RedisBroker):  # subclassing the library broker
    """RedisBroker that recovers the messages Dramatiq drops on a connection error, hands back
    messages of kinds it does not serve, gates fetching on free slots, and fetches by priority
    and fair share (its enqueues and requeues keep a task's place: `place()` in _lib.lua).

    When a consumer thread hits a connection error, Dramatiq discards the messages it held in
    memory (delayed ones, and a live queue's prefetched ones), while their ids stay in this
    (live) worker's ack set in Redis; Dramatiq only requeues the acks of dead workers, so those
    tasks would wait until the process restarts. Before a consumer starts, its queue's leftover
    acks of this process are put back on the queue (`consume`).
    """

    def __init__(
        self, *, store: WorkerStore, slots: Slots, unserved_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.slots = slots
        self.unserved_timeout_ms = int(unserved_timeout * 1000)
        self.mq = store.layout.mq
        self._wake = self.client.register_script(scripts.SOURCES["wake"])
        self._route = self.client.register_script(scripts.SOURCES["route"])
        self._requeue = self.client.register_script(scripts.SOURCES["requeue"])
        # Dramatiq's fetch, taking the highest priority and the fair share first (_fetch.lua).
        self.scripts["dispatch"] = self.client.register_script(
            scripts.dispatch(dramatiq_scripts["dispatch"].decode())
        )

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer for `queue_name`, after requeueing this process's orphaned acks.

        A consumer is made again after a connection error, and Dramatiq drops the messages the
        old one held in memory while their ids stay in this live process's ack set. Requeueing
        every id of that set is safe: a message some thread of this process still works on
        comes back as a duplicate, which `begin` skips.
        """
        acks = self.mq.acks(self.broker_id, queue_name)
        try:
            orphans = self.client.smembers(acks)
            if orphans:
                self.logger.warning(
                    "requeueing %d messages held before a connection error on %s",
                    len(orphans),
                    queue_name,
                )
                self.do_requeue(queue_name, *orphans)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        return _WakingConsumer(self, queue_name, prefetch, timeout)

    def ack_of(self, message: MessageProxy) -> calls.Ack:
        """What `begin` needs to acknowledge `message` in its own script; the caller then sets
        `ACKED` on the message's options, and the consumer skips its round trip."""
        queue = message.queue_name
        rid = message.options["redis_message_id"]
        return calls.Ack(self.mq.acks(self.broker_id, queue), queue, rid)

    def requeue_fetched(self, queue_name: str, messages: list[tuple[str, str]]) -> None:
        """Put fetched, unstarted messages ((message id, task id) pairs) back where they wait."""
        acks = self.mq.acks(self.broker_id, queue_name)
        call = calls.requeue(self.store.layout, queue_name, acks, messages)
        self._requeue(keys=call.keys, args=call.args)

    def do_enqueue(self, queue_name: str, redis_id: str, data: bytes) -> None:
        """Dramatiq's own enqueue (a delayed message moved on when due, a hand-back, a limit's
        deferral), through `route.lua`: a live queue's message waits in its task's bucket, keeping
        its priority and fair share, and an idle consumer is woken."""
        call = calls.route(self.store.layout, queue_name, redis_id, data)
        self._route(keys=call.keys, args=call.args)

    def defer(self, queue_name: str, message: Message[Any], delay_ms: int) -> None:
        """Put `message` on `queue_name`'s delay queue for `delay_ms`, and wake that delay queue's
        consumers, so one holds it now and moves it on when due (a limit held it back)."""
        self.enqueue(message, delay=delay_ms)
        call = calls.wake(self.store.layout, mqlayout.delayed(queue_name))
        self._wake(keys=call.keys, args=call.args)

    def hand_back(self, queue_name: str, message: Message[Any]) -> None:
        """Put back a message of a kind this process does not serve, for a worker that does.

        It returns to the queue after a short delay (so two old workers do not bounce it to and
        fro at full speed); a kind that no live worker has served for `unserved_timeout` fails
        the task, saying so, instead of leaving it PENDING forever.
        """
        kind, now = message.actor_name, self.store.now()
        served = now - self.store.kind_seen_ms(kind) < LIVE_MS
        since = now if served else int(message.options.get("tc_unserved_since") or now)
        if now - since >= self.unserved_timeout_ms:
            attempt = int(message.options.get("tc_attempt", 1))
            error = TaskError(
                "KindNotServed",
                f"no live worker has served kind {kind!r} for "
                f"{self.unserved_timeout_ms // 1000}s; start a worker with the module that "
                "defines it, or check the kind's spelling",
                False,
            )
            state = self.store.abandon(message.message_id, attempt, error)
            now_in = state.value if state else "moved on meanwhile"
            log.warning("task %s of unserved kind %r: %s", message.message_id, kind, now_in)
        else:
            n = int(message.options.get("tc_handbacks", 0)) + 1
            options = {"tc_handbacks": n, "tc_unserved_since": None if served else since}
            # Served elsewhere: back soon, for another consumer to take. Served nowhere: wait
            # longer each time, so an idle queue does not spin, but never long enough to hold
            # the task back much once a worker that serves it starts.
            delay = HAND_BACK_DELAY_MS if served else min(200 * 2**n, HAND_BACK_MAX_DELAY_MS)
            log.info("handing back task %s: kind %r is not served here", message.message_id, kind)
            self.enqueue(message.copy(options=options), delay=delay)
        self.do_ack(queue_name, message.options["redis_message_id"])
