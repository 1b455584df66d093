"""Publishing only watched tasks' events (issue 11, proposal 4): its cost and saving, interleaved.

The code before (`--base`, default the merge-base with main) and HEAD (committed code), each run
from an extracted tree (PYTHONPATH, as bench.limits does), round after round, each round starting
with another variant so load from elsewhere hits them alike:

- `e2e`: `bench.e2e`'s no-op run, nobody watching (16 callers, 2 worker processes x 8 threads).
- `wait`: `bench.seed`'s "SubmitTask + wait()": each caller waits on a WatchTask stream for its
  task before submitting the next.
- `group`: `bench.seed`'s batches of 100, each waited on with one `watch_group`.
- `events`: the live channel alone. A server and Redis, no worker: 100 tasks submitted, then
  `bench._fanout_emitter` (the worker's own `event` script, run with the variant's code) writes
  progress events of those unwatched tasks at `--rate` for `--seconds`; CPU of the server and of
  Redis per event (in the table's per-task columns), PUBLISHes per event.

Reported per variant: medians of tasks/s, CPU per task over all processes, server and Redis CPU
per task, and Redis commands per task from INFO commandstats (PUBLISH, EVALSHA, ...).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import _e2e, _procs, _report, fanout
from bench.limits import merge_base, tree

COMMANDS = ("publish", "evalsha", "xrange", "hmget", "zadd", "zrangebyscore")


Run = Callable[[], dict[str, Any]]


def variants(args: argparse.Namespace, n: int, n_wait: int, base: str, head: str) -> dict[str, Run]:
    """Each variant's run by name: `<code> <kind>`, kinds in the order of `args.kinds`."""
    p, t = args.processes, args.threads
    out: dict[str, Run] = {}
    for kind in args.kinds:
        for code, path in (("base", base), ("head", head)):
            env = {"PYTHONPATH": path}
            run: Run
            if kind == "e2e":
                run = functools.partial(_e2e.taskcast, n, p, t, env=env)
            elif kind == "wait":
                run = functools.partial(_e2e.taskcast, n_wait, p, t, env=env, wait=True)
            elif kind == "group":
                run = functools.partial(_e2e.taskcast, n, p, t, env=env, wait=True, batch=100)
            else:
                run = functools.partial(events, env, args.rate, args.seconds)
            out[f"{code} {kind}"] = run
    return out


def events(env: dict[str, str], rate: float, seconds: float, tasks: int = 100) -> dict[str, Any]:
    """Progress events of unwatched tasks at `rate` for `seconds`: the server's and Redis's CPU
    per event, in `_e2e.result`'s shape (a "task" is an event)."""
    with _procs.stack() as st:
        r = st.redis()
        server, port = st.server(r.url, accept_any_kind=True, env=env)
        coord = redis.Redis.from_url(r.url)
        ids_file = st.tmp / "ids.txt"
        ids_file.write_text("\n".join(fanout.submit_all(port, tasks)))
        args = ["--redis", r.url, "--ids", str(ids_file), "--rate", str(rate)]
        emitter = st.spawn(
            "emitter",
            [_procs.PY, "-m", "bench._fanout_emitter", *args, "--seconds", str(seconds)],
            env,
        )
        _procs.wait_for(lambda: coord.exists("bench:begun"), 120, "tasks to start running")
        meter = _procs.CpuMeter({"server": _procs.tree_of(server), "redis": _procs.redis_tree(r)})
        coord.config_resetstat()
        meter.start()
        coord.set("bench:go", 1)
        done = lambda: coord.exists("bench:emitted") or not emitter.alive()  # noqa: E731
        _procs.wait_for(done, seconds + 120, "the emitter to finish", every=0.1)
        cpu = meter.stop()
        raw = coord.get("bench:emitted")
        if raw is None:
            raise RuntimeError(f"emitter failed: {st.log_tail('emitter')}")
        sent, emit_s = (float(x) for x in fanout._text(raw).split())
        calls = _e2e.redis_calls(coord, int(sent))
        coord.close()
        return _e2e.result("events", int(sent), emit_s, cpu, redis_calls_per_task=calls)


def interleaved(runs_of: dict[str, Run], rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in runs_of}
    names = list(runs_of)
    for r in range(rounds):
        k = (r * 2) % len(names)  # base and head of each kind alternate who goes first
        for name in names[k:] + names[:k]:
            res = runs_of[name]()
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
    p.add_argument(
        "--kinds", nargs="+", default=["e2e", "wait", "group", "events"], help="runs to make"
    )
    p.add_argument("--rate", type=float, default=4000.0, help="events/s of the `events` run")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the `events` run")
    args = p.parse_args()
    n = args.tasks or (1_000 if args.quick else 4_000)
    n_wait = args.wait_tasks or (500 if args.quick else 3_000)
    rounds = args.rounds or (1 if args.quick else 3)
    commit = args.base or merge_base()
    with tempfile.TemporaryDirectory() as tmp:
        base, head = tree(Path(tmp) / "base", commit), tree(Path(tmp) / "head", "HEAD")
        print(f"watched: {n} / {n_wait} (wait) tasks x {rounds} rounds, base {commit[:10]}")
        res = interleaved(variants(args, n, n_wait, base, head), rounds)
    print()
    print(table(res))
    _report.write("watched", args.quick, {"base": commit, "tasks": n, "results": res})


if __name__ == "__main__":
    main()
