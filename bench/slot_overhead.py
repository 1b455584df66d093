"""What an attempt on a slot costs the worker by itself: N async no-ops (`bench.async_noop`) through
one default worker process (1 x 8 threads, 1,000 slots), against N sync no-ops (`bench.noop`)
through the same process in the same run.

The N tasks go in SubmitTasks calls of 1,000; CPU is the worker tree's from the first submit to
the last SUCCEEDED (GetStats polled every 100 ms). What is left is taskcast's own cost per
attempt: fetch, `begin`, the hand-off to the slot loop, the coroutine, the batched `finish`.

    python -m bench.slot_overhead [--quick] [-n 6000] [--rounds 3] [--profile DIR]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench import _procs, _report, slots
from taskcast.client import AsyncTaskClient, TaskSpec

KINDS = {"async": "bench.async_noop", "sync": "bench.noop"}


def _succeeded(stats: Any, kind: str) -> int:
    return sum(
        v
        for k in stats.kinds
        if k.kind == kind
        for s, v in k.counts.items()
        if s.value == "SUCCEEDED"
    )


async def one(port: int, kind: str, n: int, meter: _procs.CpuMeter) -> dict[str, Any]:
    """Submit `n` tasks of `kind` in batches of 1,000 and wait for them all."""
    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        before = _succeeded(await tc.stats(), kind)
        meter.start()
        t0 = time.monotonic()
        for i in range(0, n, 1000):
            await tc.submit_many([TaskSpec(kind, {}) for _ in range(min(1000, n - i))])
        while True:  # GetStats every 100 ms, as bench.slots does (nothing to await instead)
            if _succeeded(await tc.stats(), kind) - before >= n:
                break
            await asyncio.sleep(0.1)
        elapsed, cpu = time.monotonic() - t0, meter.stop()
    return {
        "tasks_per_s": n / elapsed,
        "cpu_ms_per_task": {k: v / n * 1000 for k, v in cpu.items()},
    }


def run(n: int, rounds: int, profile: Path | None) -> dict[str, Any]:
    """`rounds` rounds, each one run of each kind (alternating which goes first)."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    with _procs.stack() as st:
        r = st.redis()
        worker = st.workers(r.url, 1, 8)
        server, port = st.server(r.url)
        meter = _procs.CpuMeter(
            {
                "worker": _procs.tree_of(worker),
                "server": _procs.tree_of(server),
                "redis": _procs.redis_tree(r),
            }
        )
        for name in KINDS:  # warm up: imports, first connections
            asyncio.run(one(port, KINDS[name], 20, meter))
        for i in range(rounds):
            order = list(KINDS) if i % 2 == 0 else list(reversed(KINDS))
            for name in order:
                spy = slots._spy(worker, profile, f"{name}-noop-{i}")
                res = asyncio.run(one(port, KINDS[name], n, meter))
                if spy is not None and profile is not None:
                    slots._unspy(spy, profile / f"{name}-noop-{i}.txt")
                runs[name].append(res)
                by = {k: round(v, 3) for k, v in res["cpu_ms_per_task"].items()}
                print(f"  round {i + 1} {name:5} {res['tasks_per_s']:7,.0f} tasks/s  {by}")
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[name] = {
            "worker_cpu_ms_per_task": statistics.median(x["cpu_ms_per_task"]["worker"] for x in rs),
            "tasks_per_s": statistics.median(x["tasks_per_s"] for x in rs),
            "runs": rs,
        }
    rows = [[name, o["tasks_per_s"], o["worker_cpu_ms_per_task"]] for name, o in out.items()]
    print(_report.table("no-op attempts, medians", ["kind", "tasks/s", "worker CPU ms/task"], rows))
    return out


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("-n", type=int, help="tasks per run (default 6000; quick 1000)")
    p.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    p.add_argument("--profile", type=Path, help="py-spy the worker into DIR (distorts the figures)")
    a = p.parse_args()
    n = a.n or (1000 if a.quick else 6000)
    rounds = a.rounds or (1 if a.quick else 3)
    res = run(n, rounds, a.profile)
    if a.profile is None:  # py-spy's sampling costs the worker CPU: those are not results
        _report.write("slot_overhead", a.quick, {"n": n, "rounds": rounds, "results": res})


if __name__ == "__main__":
    main()
