"""The seed's design as a baseline (issue 11): FastAPI + Celery on Redis against taskcast.

The seed (bench/_seed_app.py): POST /tasks enqueues a Celery task and answers
`{"task_id", "status": "PENDING"}`, GET /tasks/{id} reads its state from Celery's Redis result
backend; one uvicorn process serves it, driven over HTTP/1.1 keep-alive by aiohttp. taskcast:
single SubmitTask calls and SubmitTasks batches of 100, from `AsyncTaskClient`. 16 callers each.

- submit: no worker runs; the callers submit as fast as they go. Calls/s and CPU per task
  (client, server, Redis).
- end to end: 2 worker processes x 8 threads (Celery's thread pool, taskcast's workers); each
  caller submits, then waits for the outcome before submitting again: the seed's caller polls
  GET every `--poll-ms` until SUCCESS, taskcast's waits on a stream (`wait` after a single
  submit; `watch_group` on the batch's label after a batch). Tasks/s and CPU per task over
  every process.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bench import _e2e, _procs, _report, batch

APP = "bench._seed_app"
DONE = {"SUCCESS", "FAILURE", "REVOKED"}


class Seed:
    """16 HTTP callers of the seed's API at `port`; counts the GETs they make."""

    def __init__(self, port: int, poll_s: float | None) -> None:
        self.url = f"http://127.0.0.1:{port}/tasks"
        self.poll_s = poll_s  # None: submit only, never poll
        self.polls = 0

    async def one(self, http: aiohttp.ClientSession) -> None:
        """POST one task; with a poll interval, GET it until it has ended."""
        async with http.post(self.url) as reply:
            reply.raise_for_status()
            task = await reply.json()
        assert task["status"] == "PENDING", task
        while self.poll_s is not None and task["status"] not in DONE:
            await asyncio.sleep(self.poll_s)
            async with http.get(f"{self.url}/{task['task_id']}") as reply:
                reply.raise_for_status()
                task = await reply.json()
            self.polls += 1
        assert self.poll_s is None or task["status"] == "SUCCESS", task

    async def run(self, count: int) -> None:
        """`count` tasks through 16 callers on one keep-alive connection each."""
        left = iter(range(count))
        connector = aiohttp.TCPConnector(limit=_e2e.CALLERS)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def caller() -> None:
                for _ in left:
                    await self.one(http)

            await asyncio.gather(*(caller() for _ in range(_e2e.CALLERS)))


def seed(n: int, processes: int, threads: int, poll_ms: float | None) -> dict[str, Any]:
    """The seed's design: `processes` Celery workers (0: submit only), its API, one Redis."""
    with _procs.stack() as st:
        r = st.redis()
        workers = st.celery_workers(r.url, processes, threads, app=APP) if processes else []
        server, port = st.seed_api(r.url)
        callers = Seed(port, None if poll_ms is None else poll_ms / 1000)
        groups: dict[str, Callable[[], list[Any]]] = {
            "client": _procs.me,
            "server": _procs.tree_of(server),
            "redis": _procs.redis_tree(r),
        }
        if workers:
            groups["workers"] = _procs.tree_of(*workers)
        # the warm-up also proves the workers are up: every task has to reach SUCCESS
        asyncio.run(asyncio.wait_for(callers.run(_e2e.WARMUP), _e2e.TIMEOUT))
        callers.polls = 0
        meter = _procs.CpuMeter(groups)
        meter.start()
        t0 = time.perf_counter()
        asyncio.run(asyncio.wait_for(callers.run(n), _e2e.TIMEOUT + n / 100))
        elapsed = time.perf_counter() - t0
        name = f"seed-poll{poll_ms:g}ms" if workers else "seed-submit-only"
        return _e2e.result(
            name, n, elapsed, meter.stop(), polls_per_task=callers.polls / n, poll_ms=poll_ms
        )


def systems(
    n: int, processes: int, threads: int, size: int, polls: list[float]
) -> dict[str, Callable[[], dict[str, Any]]]:
    """Every system of one run, submit only first, by the name its row gets."""
    out: dict[str, Callable[[], dict[str, Any]]] = {
        "submit: SubmitTask": lambda: batch.submit_only(n, 0),
        f"submit: SubmitTasks of {size}": lambda: batch.submit_only(n, size),
        "submit: seed POST": lambda: seed(n, 0, threads, None),
        "e2e: SubmitTask + wait": lambda: _e2e.taskcast(n, processes, threads, wait=True),
        f"e2e: SubmitTasks of {size} + watch_group": lambda: _e2e.taskcast(
            n, processes, threads, batch=size, wait=True
        ),
    }
    for ms in polls:
        out[f"e2e: seed POST + GET every {ms:g} ms"] = functools.partial(
            seed, n, processes, threads, ms
        )
    return out


def run(
    n: int, processes: int, threads: int, size: int, polls: list[float]
) -> dict[str, dict[str, Any]]:
    """One run of each system; printed as it goes."""
    out = {}
    for name, fn in systems(n, processes, threads, size, polls).items():
        res = out[name] = fn()
        print(
            f"  {name:42} {res['tasks_per_s']:8,.0f} tasks/s  "
            f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  {res['cpu_ms_per_task_by_process']}"
        )
    return out


def table(res: dict[str, dict[str, Any]], size: int) -> str:
    """Each system against the seed's row of the same phase (the first seed row end to end)."""
    rows = []
    for phase in ("submit", "e2e"):
        mine = {k: v for k, v in res.items() if k.startswith(phase)}
        base = next(v for k, v in mine.items() if "seed" in k)
        for name, r in mine.items():
            by = r["cpu_ms_per_task_by_process"]
            per_call = size if r.get("batch") else 1
            rows.append(
                [
                    name,
                    r["tasks_per_s"] / per_call,
                    r["tasks_per_s"],
                    r["tasks_per_s"] / base["tasks_per_s"],
                    r["cpu_ms_per_task"],
                    r["cpu_ms_per_task"] / base["cpu_ms_per_task"],
                    *(by.get(p, 0.0) for p in ("client", "server", "workers", "redis")),
                ]
            )
    return _report.table(
        "the seed's design against taskcast (CPU in ms per task; x = ratio to the seed's row)",
        [
            *("system", "calls/s", "tasks/s", "x tput", "CPU ms", "x CPU"),
            *("client", "server", "workers", "redis"),
        ],
        rows,
    )


def main() -> None:
    p = _e2e.parser(__doc__ or "", batch=True)
    p.add_argument(
        "--poll-ms",
        type=float,
        nargs="+",
        default=[10.0, 100.0],
        help="the seed's callers' GET intervals, one end-to-end run each",
    )
    args = p.parse_args()
    n = args.tasks or (1_500 if args.quick else 10_000)
    print(
        f"seed design: {n} no-op tasks, 16 callers, {args.processes} worker processes x "
        f"{args.threads} threads, batches of {args.batch}, seed polls every {args.poll_ms} ms"
    )
    res = run(n, args.processes, args.threads, args.batch, args.poll_ms)
    print()
    print(table(res, args.batch))
    _report.write(
        "seed",
        args.quick,
        {
            "tasks": n,
            "batch": args.batch,
            "processes": args.processes,
            "threads": args.threads,
            "poll_ms": args.poll_ms,
            "results": res,
        },
    )


if __name__ == "__main__":
    main()
