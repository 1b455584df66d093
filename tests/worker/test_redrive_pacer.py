"""The redrive pacer on a simulated clock: no one-second window ever holds more than the rate."""

from __future__ import annotations

import bisect
import itertools
import random

import pytest

from taskcast.worker.kinds.redrive import Pacer


class Clock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


REDIS_AHEAD = 1000.0  # Redis's clock runs this far ahead of the worker's monotonic clock


def run(rate: float, total: int, seed: int, stalls: float = 0.05) -> list[float]:
    """Times of `total` retries paced at `rate`, each batch taking 0-30 ms and stalling now and
    then, some of its ids skipped; the retries of a batch happen anywhere inside it, and its
    reply is read 0-50 ms after its end (a worker busy elsewhere)."""
    rng, clock = random.Random(seed), Clock()
    pacer, times = Pacer(rate, clock), list[float]()
    while len(times) < total:
        n = min(pacer.batch, total - len(times))
        clock.now += pacer.delay(n)
        assert pacer.delay(n) == 0
        start = clock.now
        clock.now += rng.uniform(0, 0.03) + (rng.random() < stalls) * rng.uniform(0, 2)
        retried = n - rng.randrange(0, max(1, n // 4))
        times += sorted(rng.uniform(start, clock.now) for _ in range(retried))
        end = clock.now + REDIS_AHEAD
        clock.now += rng.uniform(0, 0.05) * (rng.random() < 0.5)
        pacer.done(retried, end)
    return times[:total]


def most_in(times: list[float], window: float) -> int:
    """The most retries in any window [t, t + window)."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


@pytest.mark.parametrize(("rate", "total"), [(500, 5000), (8, 100), (2.5, 40), (10_000, 30_000)])
def test_no_window_holds_more_than_the_rate(rate: float, total: int) -> None:
    for seed in range(3):
        assert most_in(run(rate, total, seed), 1.0) <= int(rate)
    # ... and without stalls it is not much slower than it must be
    times = run(rate, total, 0, stalls=0)
    assert len(times) / (times[-1] - times[0]) > int(rate) * 0.8


def test_a_rate_under_one_spaces_single_retries() -> None:
    times = run(0.2, 5, 0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 5.0
