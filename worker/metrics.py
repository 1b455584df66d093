"""A worker process's Prometheus metrics, written in multiprocess mode (docs/operations.md).

Dramatiq forks the worker processes, so none of them serves HTTP: `taskcast worker` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory, each process writes its samples to files there
(prometheus_client picks that mode when the variable is set before it is imported), and the
supervisor serves their sum on one port (cli/supervise.py). Without the variable the metrics are
kept in memory and never read: about a microsecond per attempt.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:  # the attempt's context imports this module
    from taskcast.core.calls import Outcome
    from taskcast.core.states import State
    from taskcast.worker.attempt import Attempt
    from taskcast.worker.slots import Slots

__all__ = ["Metrics", "attempt_ended", "first_output", "limit_wait", "started"]

# Seconds: queue waits and run times span milliseconds (an echo) to an hour (a batch job).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
SAMPLE_EVERY = 1.0  # seconds between readings of the slot and thread gauges

ATTEMPTS = Counter(
    "taskcast_attempts",
    "Attempts that ended, by kind, outcome "
    "(succeeded, failed, retrying, cancelled, handed_back, stale) and tenant.",
    ["kind", "outcome", "tenant"],
    registry=None,
)
SCHEDULE_TO_START = Histogram(
    "taskcast_schedule_to_start_seconds",
    "First attempts: time from when the task was due (submitted, or its not_before) to its start.",
    ["kind"],
    buckets=BUCKETS,
    registry=None,
)
RUN = Histogram(
    "taskcast_run_seconds",
    "Time an attempt ran, from its start to its recorded outcome, by kind.",
    ["kind"],
    buckets=BUCKETS,
    registry=None,
)
FIRST_OUTPUT = Histogram(
    "taskcast_time_to_first_output_seconds",
    "Time from an attempt's start to its first output event (streaming kinds).",
    ["kind"],
    buckets=BUCKETS,
    registry=None,
)
LIMIT_WAITS = Counter(
    "taskcast_limit_waits",
    "Tasks a per-key limit held back (once per wait, not per try), by kind, reason "
    "(concurrency, rate, tokens) and tenant.",
    ["kind", "reason", "tenant"],
    registry=None,
)
# "livesum": the sum over live processes; the supervisor drops a dead group's files.
SLOTS = Gauge(
    "taskcast_worker_slots",
    "Async attempt slots of the worker processes, used or free.",
    ["state"],
    multiprocess_mode="livesum",
    registry=None,
)
THREADS = Gauge(
    "taskcast_worker_threads",
    "Dramatiq worker threads, busy (in a message) or idle.",
    ["state"],
    multiprocess_mode="livesum",
    registry=None,
)


# Each metric's child per label values, looked up once: `labels()` validates and locks on every
# call (2% of the workers' CPU under batch load). The label values are bounded (kinds,
# outcomes, configured tenants), so are these caches.
@functools.cache
def _attempts(kind: str, outcome: str, tenant: str) -> Any:
    return ATTEMPTS.labels(kind, outcome, tenant)


@functools.cache
def _run(kind: str) -> Any:
    return RUN.labels(kind)


@functools.cache
def _schedule_to_start(kind: str) -> Any:
    return SCHEDULE_TO_START.labels(kind)


def started(kind: str, waited_ms: int) -> None:
    """An attempt started; `waited_ms` is a first attempt's wait for it (-1: not measured)."""
    if waited_ms >= 0:
        _schedule_to_start(kind).observe(waited_ms / 1000)


def limit_wait(kind: str, reason: str, tenant: str) -> None:
    """A limit started holding a task of `kind` (of `tenant`) back."""
    LIMIT_WAITS.labels(kind, reason, tenant).inc()


def first_output(kind: str, seconds: float) -> None:
    """An attempt emitted its first output, `seconds` after it started."""
    FIRST_OUTPUT.labels(kind).observe(seconds)


def attempt_ended(attempt: Attempt, outcome: Outcome, state: State | None) -> None:
    """An attempt's outcome was recorded and moved its task to `state` (None: stale)."""
    if outcome.error is not None and outcome.error.type == "WorkerShutdown":
        label = "handed_back"  # retryable at once, by another process
    else:
        label = "stale" if state is None else state.value.lower()
    _attempts(attempt.kind, label, attempt.tenant).inc()
    if state is not None:
        _run(attempt.kind).observe(time.monotonic() - attempt.ctx.began)


class Metrics(Middleware):
    """Counts busy threads and samples the slot and thread gauges; first in the middleware list,
    so its `before_process_message` runs before any other can skip the message."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.threads = 0
        self.busy = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Start sampling, when an endpoint will read the samples."""
        self.threads = int(worker.worker_threads)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            threading.Thread(target=self._sample, name="taskcast-metrics", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Stop sampling."""
        self._stop.set()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """A thread is busy."""
        with self._lock:
            self.busy += 1

    def after_process_message(self, broker: dramatiq.Broker, message: Any, **_: Any) -> None:
        """The thread is idle again."""
        with self._lock:
            self.busy -= 1

    after_skip_message = after_process_message

    def _sample(self) -> None:
        while True:
            free = self.slots.free()
            SLOTS.labels("free").set(free)
            SLOTS.labels("used").set(self.slots.capacity - free)
            busy = self.busy
            THREADS.labels("busy").set(busy)
            THREADS.labels("idle").set(self.threads - busy)
            if self._stop.wait(SAMPLE_EVERY):
                return
