"""Per-key limits: what they cost end to end, and a rate limit held over 30 s by 3 workers.

1. Cost. The e2e no-op run (bench/_e2e.py) in three variants, interleaved round after round so
   that load from elsewhere hits them alike: `base`, the code this branch started from (`git
   merge-base HEAD main`); `no limits`, HEAD with `bench.noop`; `limited`, HEAD with
   `bench.noop_limited` (a concurrency and a rate
   limit that never hold a task back, so what is measured is their cost). Each round starts with
   the next variant, so none always runs first. `tokens`: HEAD with `bench.noop_tokens` (a token
   budget never spent, its key from the payload: the payload read, the window's sum, the
   reservation and the debit at finish). Target: `no limits`
   within noise (5%) of `base` in CPU per task and throughput: a task without limits costs no
   extra Redis call. Every variant runs its committed code from an extracted tree (PYTHONPATH).
2. Rate. `bench.rated` (20/s, one key) over 3 worker processes for 30 s: the most starts in any
   one-second window (must be <= 20), per calendar second, and the rate over the run (target:
   within 5% of 20/s). Start times are the Redis time the admitting script stamped.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import _e2e, _procs, _report
from taskcast.client import TaskClient

PACKAGES = {"core": "core", "server": "server", "worker": "worker", "client": "client"}
PACKAGES |= {"cli": "cli", "v1": "protos/taskcast/v1"}


def merge_base() -> str:
    """The commit this branch started from."""
    return subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=_report.ROOT, capture_output=True, text=True
    ).stdout.strip()


def tree(root: Path, rev: str) -> str:
    """The packages of `rev` under `root`, importable as `taskcast`; their PYTHONPATH.

    Both sides run this way: the same code ran about 10% more CPU per task (in every process,
    even the bench's own client) from the editable install than from such a tree.
    """
    src = root / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "core", "server", "worker", "client", "cli", "protos"],
        cwd=_report.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = root / "pkg" / "taskcast"
    pkg.mkdir(parents=True)
    for name, folder in PACKAGES.items():
        (pkg / name).symlink_to(src / folder)
    return str(root / "pkg")


def cost(
    n: int, rounds: int, processes: int, threads: int, base_path: str, head_path: str
) -> dict[str, Any]:
    """The e2e variants, interleaved."""
    return interleaved(
        {
            "base": {"env": {"PYTHONPATH": base_path}},
            "no limits": {"env": {"PYTHONPATH": head_path}},
            "limited": {"env": {"PYTHONPATH": head_path}, "kind": "bench.noop_limited"},
            "tokens": {"env": {"PYTHONPATH": head_path}, "kind": "bench.noop_tokens"},
        },
        n,
        rounds,
        processes,
        threads,
    )


def interleaved(
    variants: dict[str, dict[str, Any]], n: int, rounds: int, processes: int, threads: int
) -> dict[str, Any]:
    """`_e2e.taskcast(n, ...)` with each variant's keyword arguments, round after round; the
    medians of tasks/s and CPU per task of each, and its runs (bench.fairness uses it too)."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    names = list(variants)
    for r in range(rounds):
        # Each round starts with another variant: a run right after another one measured ~10%
        # more CPU per task in every process, the client's identical code included.
        k = r % len(names)
        for name in names[k:] + names[:k]:
            kw = variants[name]
            res = _e2e.taskcast(n, processes, threads, **kw)
            runs[name].append(res)
            print(
                f"  round {r + 1} {name:19} {res['tasks_per_s']:8,.0f} tasks/s  "
                f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  {res['cpu_ms_per_task_by_process']}"
            )
    out = {}
    for name, rs in runs.items():
        out[name] = {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rs),
            "cpu_ms_per_task": statistics.median(r["cpu_ms_per_task"] for r in rs),
            "runs": rs,
        }
    return out


def against_base(costs: dict[str, Any], title: str, name: str) -> dict[str, dict[str, Any]]:
    """Print the medians of `costs` as ratios to `base`; the targets of variant `name` (within
    5% of the base in CPU per task and in throughput)."""
    b = costs["base"]
    rows = [
        [
            variant,
            c["tasks_per_s"],
            c["tasks_per_s"] / b["tasks_per_s"],
            c["cpu_ms_per_task"],
            c["cpu_ms_per_task"] / b["cpu_ms_per_task"],
        ]
        for variant, c in costs.items()
    ]
    print()
    print(_report.table(title, ["variant", "tasks/s", "x tput", "CPU ms/task", "x CPU"], rows))
    cpu = costs[name]["cpu_ms_per_task"] / b["cpu_ms_per_task"]
    tput = costs[name]["tasks_per_s"] / b["tasks_per_s"]
    key = name.replace(" ", "_")
    return {
        f"{key}_cpu_vs_base": {"value": cpu, "target": "<= 1.05", "met": cpu <= 1.05},
        f"{key}_tput_vs_base": {"value": tput, "target": ">= 0.95", "met": tput >= 0.95},
    }


def rate(seconds: int, workers: int) -> dict[str, Any]:
    """`bench.rated` (20/s) for `seconds` over `workers` processes."""
    n = 20 * seconds
    with _procs.stack() as st:
        r = st.redis()
        for i in range(workers):
            st.workers(r.url, 1, 4, name=f"workers{i}")
        _, port = st.server(r.url)
        with TaskClient(f"127.0.0.1:{port}") as client:
            handles = [client.submit("bench.rated", {}) for _ in range(n)]
            for h in handles:
                h.wait(timeout=seconds * 3)
            starts = sorted(
                int(h.get().started_at.timestamp() * 1000)  # type: ignore[union-attr]
                for h in handles
            )
    windows = [sum(1 for t in starts[i:] if t < s + 1000) for i, s in enumerate(starts)]
    per_second = Counter(t // 1000 for t in starts)
    return {
        "tasks": n,
        "workers": workers,
        "span_s": (starts[-1] - starts[0]) / 1000,
        "rate_per_s": (n - 1) * 1000 / (starts[-1] - starts[0]),
        "max_in_any_1s_window": max(windows),
        "max_per_calendar_second": max(per_second.values()),
        "per_calendar_second": [per_second[s] for s in sorted(per_second)],
    }


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--processes", "-p", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--tasks", "-n", type=int, default=0, help="tasks per e2e run")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--seconds", type=int, default=0, help="length of the rate run")
    args = p.parse_args()
    n = args.tasks or (1_500 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (5 if args.quick else 30)
    commit = merge_base()
    with tempfile.TemporaryDirectory() as tmp:
        base_path, head_path = tree(Path(tmp) / "base", commit), tree(Path(tmp) / "head", "HEAD")
        print(f"cost: {n} no-op tasks x {rounds} rounds, {args.processes} x {args.threads}")
        print(f"  base = {commit[:10]} (merge-base with main), against HEAD (committed code)")
        costs = cost(n, rounds, args.processes, args.threads, base_path, head_path)
    t0 = time.monotonic()
    print(f"rate: 20/s for {seconds} s over 3 worker processes")
    rated = rate(seconds, 3)
    print(f"  took {time.monotonic() - t0:.0f} s")
    b, lim, tok = costs["base"], costs["limited"], costs["tokens"]
    targets = against_base(
        costs, "e2e with and without limits (medians; x = ratio to base)", "no limits"
    )
    targets |= {
        "rate_max_in_any_second": {
            "value": rated["max_in_any_1s_window"],
            "target": "<= 20",
            "met": rated["max_in_any_1s_window"] <= 20,
        },
        "rate_over_run": {
            "value": rated["rate_per_s"],
            "target": "19-21",
            "met": 19 <= rated["rate_per_s"] <= 21,
        },
    }
    limited_cpu = lim["cpu_ms_per_task"] / b["cpu_ms_per_task"]
    print(f"limited: {limited_cpu:.3f}x base CPU per task")
    print(f"tokens: {tok['cpu_ms_per_task'] / b['cpu_ms_per_task']:.3f}x base CPU per task")
    print(f"rate: {rated}")
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.3f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "limits",
        args.quick,
        {
            "base_commit": commit,
            "cost": costs,
            "rate": rated,
            "targets": targets,
            "env": {k: v for k, v in os.environ.items() if k.startswith("TASKCAST_")},
        },
    )


if __name__ == "__main__":
    main()
