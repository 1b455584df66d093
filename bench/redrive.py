"""RedriveTasks: 10,000 FAILED tasks redriven at 500/s (issue 11).

Targets: the operation finishes within 10% of 20 s (10,000 / 500), and no one-second window (by
Redis's clock: each task's "retry" event time) holds more than 500 retries. Two worker processes
(8 threads each) run both the operation and the 10,000 retried tasks, so the pace holds while the
same workers run the work it releases.

    python -m bench.redrive [--quick]        (--quick: 2,000 tasks at 500/s)
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Any, cast

import redis

from bench import _procs, _report
from bench._procs import LAYOUT

RATE, TARGET_X = 500.0, 0.10
LABEL = {"bench": "redrive"}


async def fail_all(port: int, n: int) -> list[str]:
    """Submit `n` bench.fail_once tasks (64 at a time) and wait until all have FAILED."""
    from taskcast.client import AsyncTaskClient

    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        sem = asyncio.Semaphore(64)

        async def one() -> str:
            async with sem:
                return (await tc.submit("bench.fail_once", {}, labels=LABEL)).id

        ids = await asyncio.gather(*(one() for _ in range(n)))
        preview = tc.redrive(labels=LABEL, error_type="RuntimeError", dry_run=True)
        while (await preview).count < n:
            await asyncio.sleep(0.5)
            preview = tc.redrive(labels=LABEL, error_type="RuntimeError", dry_run=True)
    return list(ids)


async def redrive(port: int, n: int) -> dict[str, Any]:
    """Start the operation and wait for its end; its record's times and result."""
    from taskcast.client import AsyncTaskClient

    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        t0 = time.monotonic()
        started = await tc.redrive(labels=LABEL, max_per_second=RATE)
        assert started.operation is not None and started.count == n, started
        result = await tc.wait(started.operation.id, timeout=600)
        wall = time.monotonic() - t0
        op = await tc.get(started.operation.id)
    assert op.started_at is not None and op.finished_at is not None
    return {
        "result": result,
        "wall_s": wall,
        "operation_s": (op.finished_at - op.started_at).total_seconds(),
    }


def retry_times(redis_url: str, ids: list[str]) -> list[int]:
    """Redis times (ms) of every "retry" event of the tasks."""
    client = redis.Redis.from_url(redis_url)
    times: list[int] = []
    for start in range(0, len(ids), 1000):
        with client.pipeline(transaction=False) as pipe:
            for task_id in ids[start : start + 1000]:
                pipe.xrange(LAYOUT.events(task_id))
            for entries in pipe.execute():
                for _, fields in cast("list[tuple[bytes, dict[bytes, bytes]]]", entries):
                    if fields.get(b"reason") == b"retry":
                        times.append(int(fields[b"ts"]))
    client.close()
    return sorted(times)


def most_in_a_second(times: list[int]) -> int:
    """The most retries in any window [t, t + 1000 ms)."""
    return max((bisect.bisect_left(times, t + 1000) - i for i, t in enumerate(times)), default=0)


def main() -> None:
    args = _report.parser(__doc__ or "").parse_args()
    n = 2_000 if args.quick else 10_000
    with _procs.stack() as st:
        r = st.redis()
        _server, port = st.server(r.url)
        st.workers(r.url, 2, 8)
        ids = asyncio.run(fail_all(port, n))
        print(f"{n} tasks FAILED; redriving at {RATE:.0f}/s")
        run = asyncio.run(redrive(port, n))
        times = retry_times(r.url, ids)
    expected = n / RATE
    peak = most_in_a_second(times)
    span = (times[-1] - times[0]) / 1000 if times else 0.0
    ok_time = abs(run["operation_s"] - expected) <= TARGET_X * expected
    rows = [
        ["tasks retried (events)", len(times), n, _report.verdict(len(times) == n)],
        ["operation start to end, s", round(run["operation_s"], 2), expected,
         _report.verdict(ok_time)],
        ["first to last retry, s", round(span, 2), "", ""],
        ["call to end (client), s", round(run["wall_s"], 2), "", ""],
        ["most retries in any 1 s", peak, int(RATE), _report.verdict(peak <= RATE)],
    ]  # fmt: skip
    print()
    print(_report.table(f"Redrive {n} at {RATE:.0f}/s", ["figure", "value", "target", ""], rows))
    _report.write(
        "redrive",
        args.quick,
        {"tasks": n, "rate": RATE, **run, "retry_span_s": span, "max_in_1s": peak},
    )


if __name__ == "__main__":
    main()
