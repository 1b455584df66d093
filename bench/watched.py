"""Publishing only watched tasks' events (issue 11, proposal 4): its cost and saving, interleaved.

The code before (`--base`, default the merge-base with main) and HEAD (committed code), each run
from an extracted tree (PYTHONPATH, as bench.limits does), round after round, each round starting
with another variant so load from elsewhere hits them alike:

- `e2e`: `bench.e2e`'s no-op run, nobody watching (16 callers, 2 worker processes x 8 threads).
- `wait`: `bench.seed`'s "SubmitTask + wait()": each caller waits on a WatchTask stream for its
  task before submitting the next.
- `group`: `bench.seed`'s batches of 100, each waited on with one `watch_group`.

Reported per variant: medians of tasks/s, CPU per task over all processes, server and Redis CPU
per task, and Redis commands per task from INFO commandstats (PUBLISH, EVALSHA, ...).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import _e2e, _report
from bench.limits import merge_base, tree

COMMANDS = ("publish", "evalsha", "xrange", "hmget", "zadd", "zrangebyscore")


def variants(n: int, n_wait: int, base: str, head: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for code, path in (("base", base), ("head", head)):
        env = {"PYTHONPATH": path}
        out[f"{code} e2e"] = {"n": n, "env": env}
        out[f"{code} wait"] = {"n": n_wait, "env": env, "wait": True}
        out[f"{code} group"] = {"n": n, "env": env, "wait": True, "batch": 100}
    return out


def interleaved(
    runs_of: dict[str, dict[str, Any]], rounds: int, processes: int, threads: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in runs_of}
    names = list(runs_of)
    for r in range(rounds):
        k = (r * 2) % len(names)  # base and head of each kind alternate who goes first
        for name in names[k:] + names[:k]:
            kw = dict(runs_of[name])
            res = _e2e.taskcast(kw.pop("n"), processes, threads, **kw)
            res["loadavg_at_end"] = list(os.getloadavg())
            runs[name].append(res)
            by = res["cpu_ms_per_task_by_process"]
            pubs = res["redis_calls_per_task"].get("publish", 0.0)
            print(
                f"  round {r + 1} {name:11} {res['tasks_per_s']:8,.0f} tasks/s  "
                f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  server {by['server']:.3f}  "
                f"redis {by['redis']:.3f}  publish/task {pubs:.2f}",
                flush=True,
            )
    return {name: medians(rs) for name, rs in runs.items()}


def medians(rs: list[dict[str, Any]]) -> dict[str, Any]:
    by = [r["cpu_ms_per_task_by_process"] for r in rs]
    calls = [r["redis_calls_per_task"] for r in rs]
    return {
        "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rs),
        "cpu_ms_per_task": statistics.median(r["cpu_ms_per_task"] for r in rs),
        **{
            f"{p}_ms_per_task": statistics.median(b.get(p, 0.0) for b in by)
            for p in ("client", "server", "workers", "redis")
        },
        "calls_per_task": {c: statistics.median(x.get(c, 0.0) for x in calls) for c in COMMANDS},
        "runs": rs,
    }


def table(res: dict[str, Any]) -> str:
    rows = []
    for name, m in res.items():
        kind = name.split(" ", 1)[1]
        b = res[f"base {kind}"]
        rows.append(
            [
                name,
                m["tasks_per_s"],
                m["cpu_ms_per_task"],
                m["cpu_ms_per_task"] / b["cpu_ms_per_task"],
                m["server_ms_per_task"],
                m["server_ms_per_task"] / b["server_ms_per_task"],
                m["redis_ms_per_task"],
                m["redis_ms_per_task"] / b["redis_ms_per_task"],
                *(m["calls_per_task"][c] for c in COMMANDS),
            ]
        )
    return _report.table(
        "watched-only publishing: medians (x = against base of the same kind)",
        [
            *("variant", "tasks/s", "CPU ms", "x", "server", "x", "redis", "x"),
            *(f"{c}/task" for c in COMMANDS),
        ],
        rows,
    )


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--processes", "-p", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--tasks", "-n", type=int, default=0, help="tasks per e2e and group run")
    p.add_argument("--wait-tasks", type=int, default=0, help="tasks per wait run")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--base", default="", help="the code before (default: merge-base with main)")
    args = p.parse_args()
    n = args.tasks or (1_000 if args.quick else 4_000)
    n_wait = args.wait_tasks or (500 if args.quick else 3_000)
    rounds = args.rounds or (1 if args.quick else 3)
    commit = args.base or merge_base()
    with tempfile.TemporaryDirectory() as tmp:
        base, head = tree(Path(tmp) / "base", commit), tree(Path(tmp) / "head", "HEAD")
        print(f"watched: {n} / {n_wait} (wait) tasks x {rounds} rounds, base {commit[:10]}")
        res = interleaved(variants(n, n_wait, base, head), rounds, args.processes, args.threads)
    print()
    print(table(res))
    _report.write("watched", args.quick, {"base": commit, "tasks": n, "results": res})


if __name__ == "__main__":
    main()
