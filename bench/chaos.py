"""Soak under faults: mixed tasks for a while, killing workers, the server and Redis at random.

    python -m bench.chaos --minutes 10            # the recorded run (docs/reliability.md)
    python -m bench.chaos --minutes 1 --rate 10   # a quick look

Everything runs on this machine: a private redis-server (AOF, fsync always), one server, two
supervised worker groups. Each acknowledged task gets a watcher. At the end it checks that every
acknowledged task reached exactly one terminal state, and that every watcher saw 1, 2, 3, ...
with no gap and no duplicate, ending with that terminal event. Exit status 1 if anything is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import _report
from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import AsyncTaskClient, TaskcastError
from taskcast.core.layout import Layout
from tests.support import ServerProcess, WorkerProcess

PREFIX = "chaos"
LAYOUT = Layout(PREFIX)
MIX: list[tuple[str, Any]] = [  # kind, payload factory: mostly quick, some retrying, some failing
    ("demo.sleep", lambda: {"seconds": random.uniform(0.05, 1.5), "steps": random.randint(1, 6)}),
    ("demo.fail", lambda: {"times": 1}),
    ("demo.fail", lambda: {"fatal": True}),
    ("test.chatty", lambda: {"n": random.randint(1, 30)}),
    ("test.echo", lambda: {"n": random.randint(0, 10**20)}),
]


@dataclass
class Tally:
    """What happened, for the report."""

    acknowledged: dict[str, list[int]] = field(default_factory=dict)  # task id -> sequences seen
    rejected: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    watch_errors: list[str] = field(default_factory=list)


class Stack:
    """Redis, the server and two worker groups, each killable and restartable."""

    def __init__(self, data: Path) -> None:
        self.redis = RedisProcess(data / "redis", fsync="always").start()
        self.server = ServerProcess(self.redis.url, PREFIX, free_port()).start()
        self.workers = [self._worker() for _ in range(2)]

    def _worker(self) -> WorkerProcess:
        return WorkerProcess(
            self.redis.url, PREFIX, threads=8, extra_env={"TASKCAST_LEASE": "5"}
        ).start()

    async def fault(self, tally: Tally) -> None:
        """Inject one random fault and repair what needs repairing."""
        kind = random.choice(["worker_process", "worker_machine", "server", "redis"])
        tally.faults[kind] += 1
        print(f"{time.strftime('%H:%M:%S')} fault: {kind}", flush=True)
        if kind == "worker_process":  # as the OOM killer would; the supervisor restarts it
            pids = [p for w in self.workers for p in w.pids()]
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
        elif kind == "worker_machine":  # the whole group dies; a replacement comes up later
            i = random.randrange(len(self.workers))
            await asyncio.to_thread(self.workers[i].stop, signal.SIGKILL)
            await asyncio.sleep(random.uniform(0.5, 3))  # downtime before the replacement
            self.workers[i] = await asyncio.to_thread(self._worker)
        elif kind == "server":
            await asyncio.to_thread(self.server.stop, signal.SIGKILL)
            await asyncio.sleep(random.uniform(0.2, 2))  # downtime
            await asyncio.to_thread(self.server.start)
        else:
            self.redis.kill()
            await asyncio.sleep(random.uniform(0.2, 2))  # downtime
            await asyncio.to_thread(self.redis.start)

    def stop(self) -> None:
        """Everything down."""
        for w in self.workers:
            w.stop(signal.SIGKILL)
        self.server.stop(signal.SIGKILL)
        self.redis.stop()


async def watch(client: AsyncTaskClient, task_id: str, tally: Tally) -> None:
    """Follow one task to its end, recording every sequence."""
    seen = tally.acknowledged[task_id]
    try:
        async for event in client.watch(task_id, after_sequence=0):
            seen.append(event.sequence)
    except TaskcastError as exc:
        tally.watch_errors.append(f"{task_id}: {exc}")


async def load(
    client: AsyncTaskClient,
    tally: Tally,
    until: float,
    rate: float,
    watchers: set[asyncio.Task[None]],
) -> None:
    """Submit mixed tasks at `rate` per second until `until`."""
    while time.monotonic() < until:
        kind, payload = random.choice(MIX)
        try:
            handle = await client.submit(kind, payload(), max_attempts=4)
        except TaskcastError:
            tally.rejected += 1  # not acknowledged: the caller knows and may retry
        else:
            tally.acknowledged[handle.id] = []
            w = asyncio.create_task(watch(client, handle.id, tally))
            watchers.add(w)
            w.add_done_callback(watchers.discard)
        await asyncio.sleep(random.expovariate(rate))  # Poisson arrivals


def verify(stack: Stack, tally: Tally) -> dict[str, Any]:
    """Check every promise against what Redis holds and what the watchers saw."""
    r = redis.Redis.from_url(stack.redis.url)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    for task_id, seen in tally.acknowledged.items():
        state, last = r.hmget(LAYOUT.task(task_id), "state", "seq")
        if state is None:
            problems.append(f"{task_id}: lost (no record)")
            continue
        events = r.xrange(LAYOUT.events(task_id))
        terminal = [
            f for _, f in events if f.get(b"state") in (b"SUCCEEDED", b"FAILED", b"CANCELLED")
        ]
        outcomes[state.decode()] += 1
        if len(terminal) != 1:
            problems.append(f"{task_id}: {len(terminal)} terminal events, state {state!r}")
        if seen != list(range(1, int(last) + 1)):
            problems.append(f"{task_id}: watcher saw {seen[:12]}... of {int(last)}")
    r.close()
    return {"outcomes": dict(outcomes), "problems": problems}


async def main_async(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        stack = await asyncio.to_thread(Stack, Path(tmp))
        tally, watchers = Tally(), set[asyncio.Task[None]]()
        started = time.monotonic()
        try:
            async with AsyncTaskClient(stack.server.address, timeout=5, reconnect_for=180) as c:
                until = started + args.minutes * 60
                loader = asyncio.create_task(load(c, tally, until, args.rate, watchers))
                while time.monotonic() < until:
                    await asyncio.sleep(random.uniform(*args.fault_every))  # time between faults
                    if time.monotonic() < until:
                        await stack.fault(tally)
                await loader
                print(f"load done: {len(tally.acknowledged)} acknowledged; draining", flush=True)
                await asyncio.wait_for(asyncio.gather(*watchers), timeout=300)
            report = verify(stack, tally)
        finally:
            await asyncio.to_thread(stack.stop)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "minutes": args.minutes,
        "acknowledged": len(tally.acknowledged),
        "rejected_while_down": tally.rejected,
        "faults": dict(tally.faults),
        "outcomes": report["outcomes"],
        "lost_or_broken": len(report["problems"]),
        "problems": report["problems"][:50],
        "watch_errors": tally.watch_errors[:50],
        "events_seen": sum(len(s) for s in tally.acknowledged.values()),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    _report.save(f"chaos-{time.strftime('%Y%m%d-%H%M')}.json", summary)
    print(json.dumps(summary, indent=2))
    return 1 if report["problems"] or tally.watch_errors else 0


def main() -> int:
    """Parse arguments and run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=float, default=20, help="tasks submitted per second")
    p.add_argument(
        "--fault-every",
        type=float,
        nargs=2,
        default=(10, 25),
        metavar=("MIN", "MAX"),
        help="seconds between faults",
    )
    p.add_argument("--seed", type=int, default=1)
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
