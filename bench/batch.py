"""Batches: no-op tasks submitted 100 per SubmitTasks call, end to end, against single submits,
raw Dramatiq and Celery in the same run.

Same worker layout for all (default 2 processes x 8 threads), each on its own Redis, 16 callers
for taskcast (each sending one batch at a time). CPU is summed over the client, the server
(taskcast only), the workers and Redis. Targets (issue 11): batches' CPU per task at most 1.6x
raw Dramatiq's, their tasks/s at least 3x Celery's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from bench import _e2e, _procs, _report, e2e
from taskcast.client import AsyncTaskClient, TaskSpec


def submit_only(n: int, batch: int) -> dict[str, Any]:
    """The submit path alone: batches into a server with no worker (tasks stay queued), so its
    CPU per task (client, server, Redis) is what SubmitTasks costs, apart from running them.
    `batch` 0: one SubmitTask call per task instead."""
    with _procs.stack() as st:
        r = st.redis()
        server, port = st.server(r.url, accept_any_kind=True)

        async def submit(count: int) -> None:
            async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
                left = iter(range(count))

                async def caller() -> None:
                    spec = TaskSpec("bench.noop", "{}")
                    while chunk := [spec for _ in itertools.islice(left, batch or 1)]:
                        if batch:
                            await tc.submit_many(chunk)
                        else:
                            await tc.submit(spec.kind, spec.payload)

                await asyncio.gather(*(caller() for _ in range(_e2e.CALLERS)))

        asyncio.run(submit(_e2e.WARMUP))
        meter = _procs.CpuMeter(
            {"client": _procs.me, "server": _procs.tree_of(server), "redis": _procs.redis_tree(r)}
        )
        meter.start()
        t0 = time.perf_counter()
        asyncio.run(submit(n))
        elapsed = time.perf_counter() - t0
        return _e2e.result("submit-only", n, elapsed, meter.stop(), batch=batch)


def run(n: int, processes: int, threads: int, batch: int) -> dict[str, dict[str, Any]]:
    """One run of each system; printed as it goes."""
    systems = {
        f"batch{batch}-submit-only": lambda: submit_only(n, batch),
        f"batch{batch}": lambda: _e2e.taskcast(n, processes, threads, batch=batch),
        "single": lambda: _e2e.taskcast(n, processes, threads),
        "dramatiq": lambda: _e2e.raw_dramatiq(n, processes, threads),
        "celery": lambda: _e2e.celery(n, processes, threads),
    }
    out = {}
    for name, fn in systems.items():
        res = fn()
        out[name] = res
        print(
            f"  {name:9} {res['tasks_per_s']:8,.0f} tasks/s  "
            f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  {res['cpu_ms_per_task_by_process']}"
        )
    return out


def main() -> None:
    p = _e2e.parser(__doc__ or "", batch=True)
    args = p.parse_args()
    n = args.tasks or (3_000 if args.quick else 20_000)
    print(
        f"batches: {n} no-op tasks, {args.batch} per call, "
        f"{args.processes} worker processes x {args.threads} threads"
    )
    res = run(n, args.processes, args.threads, args.batch)
    bt, dq, ce = res[f"batch{args.batch}"], res["dramatiq"], res["celery"]
    cpu_vs_dq = bt["cpu_ms_per_task"] / dq["cpu_ms_per_task"]
    tput_vs_ce = bt["tasks_per_s"] / ce["tasks_per_s"]
    targets = {
        "batch_cpu_per_task_vs_dramatiq": {
            "value": cpu_vs_dq,
            "target": "<= 1.6",
            "met": cpu_vs_dq <= 1.6,
        },
        "batch_throughput_vs_celery": {
            "value": tput_vs_ce,
            "target": ">= 3.0",
            "met": tput_vs_ce >= 3.0,
        },
    }
    print()
    print(e2e.table(res, dq))
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "batch",
        args.quick,
        {
            "tasks": n,
            "batch": args.batch,
            "processes": args.processes,
            "threads": args.threads,
            "results": res,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
