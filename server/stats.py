"""GetStats' figures as typed records, and the run-time percentiles computed from samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskcast.core.states import State

PERCENTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class QueueFigures:
    """One queue's message counts and running tasks; capacity comes from the worker records."""

    name: str
    depth: int  # messages waiting to be picked up
    delayed: int  # messages waiting for their time (delayed or backing off)
    dead: int  # dead-lettered messages
    running: int  # tasks running now


@dataclass(frozen=True)
class KindFigures:
    """One kind's task counts per state and run-time percentiles of its recent attempts."""

    kind: str
    counts: Mapping[State, int]  # every state: active ones now, terminal ones ever
    samples: int  # how many recent run times the percentiles are computed over
    p50_ms: int | None  # None when there are no samples
    p90_ms: int | None
    p99_ms: int | None

    @classmethod
    def from_samples(
        cls, kind: str, counts: Mapping[State, int], run_times_ms: Sequence[int]
    ) -> KindFigures:
        """The figures with percentiles of `run_times_ms` (any order)."""
        ordered = sorted(run_times_ms)
        p50, p90, p99 = (percentile(ordered, q) for q in PERCENTILES)
        return cls(kind, counts, len(ordered), p50, p90, p99)


def percentile(ordered: Sequence[int], q: float) -> int | None:
    """The nearest-rank value at or above fraction `q` of sorted samples; None when empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
