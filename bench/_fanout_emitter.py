"""The fan-out benchmark's synthetic worker: the worker's own store calls, without Dramatiq.

10,000 tasks RUNNING at once would need 10,000 Dramatiq worker threads (an attempt holds its
thread, async handlers included), so this process drives the attempts itself through
`WorkerStore` (the same `begin`, `event` and `finish` scripts a worker runs):
1. `begin` every task (RUNNING), then set `bench:begun`;
2. wait for `bench:go`, then emit progress events round-robin at the aggregate rate for the given
   seconds, each stamped with `time.time_ns()` taken just before its write;
3. `finish` every task (SUCCEEDED), which ends every watch stream, then set `bench:emitted`.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import redis

from bench._procs import LAYOUT
from taskcast.core import calls
from taskcast.core.calls import Outcome, Status
from taskcast.worker.store import WorkerStore


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    args = p.parse_args()
    with open(args.ids) as f:
        ids = f.read().split()
    client = redis.Redis.from_url(args.redis)
    store = WorkerStore(client, LAYOUT, threading.Event())
    for task_id in ids:
        store.begin(task_id, 1, 3_600_000, uuid.uuid4().hex)
    client.set("bench:begun", 1)
    deadline = time.monotonic() + 600
    while not client.exists("bench:go"):
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.05)  # waiting for the driver, which has no other way to tell us
    counters = dict.fromkeys(ids, 0)
    tick, per_tick = 0.01, max(1, round(args.rate * 0.01))
    sent, cursor = 0, 0
    start = next_at = time.monotonic()
    while time.monotonic() - start < args.seconds:
        for _ in range(per_tick):
            task_id = ids[cursor % len(ids)]
            cursor += 1
            counters[task_id] += 1
            stamp = str(time.time_ns())
            store.event(
                task_id,
                1,
                counters[task_id],
                ["type", "progress", "fraction", "0.5", "message", stamp],
            )
            sent += 1
        next_at += tick
        time.sleep(max(0.0, next_at - time.monotonic()))  # pacing to the target rate
    elapsed = time.monotonic() - start
    for task_id in ids:
        outcome = Outcome(Status.OK, result="null")
        store.finish(
            calls.finish(
                LAYOUT, task_id, 1, outcome, kind="bench.noop", queue="default", timeout_ms=600_000
            )
        )
    client.set("bench:emitted", f"{sent} {elapsed}")


if __name__ == "__main__":
    main()
