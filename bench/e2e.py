"""End to end: no-op tasks from submit to SUCCEEDED, against raw Dramatiq and Celery.

Same worker layout for all three (default 2 processes x 8 threads), each on its own Redis.
CPU is summed over the client (this process), the server (taskcast only), the workers and Redis.
Targets: CPU per task at most 1.6x raw Dramatiq's and below Celery's; throughput at least 1.5x
Celery's.
"""

from __future__ import annotations

from typing import Any

from bench import _e2e, _report


def run(n: int, processes: int, threads: int) -> dict[str, dict[str, Any]]:
    """One run of each system; printed as it goes."""
    out = {}
    for name, fn in _e2e.SYSTEMS.items():
        res = fn(n, processes, threads)
        out[name] = res
        print(
            f"  {name:9} {res['tasks_per_s']:8,.0f} tasks/s  "
            f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  {res['cpu_ms_per_task_by_process']}"
        )
    return out


def row(name: str, r: dict[str, Any], dq: dict[str, Any]) -> list[Any]:
    """One system's figures: tasks/s and CPU per task, each also against raw Dramatiq's `dq`,
    then CPU per task by process."""
    by = r["cpu_ms_per_task_by_process"]
    ratios = [r["tasks_per_s"] / dq["tasks_per_s"], r["cpu_ms_per_task"] / dq["cpu_ms_per_task"]]
    return [
        name,
        r["tasks_per_s"],
        ratios[0],
        r["cpu_ms_per_task"],
        ratios[1],
        *(by.get(p, 0.0) for p in ("client", "server", "workers", "redis")),
    ]


def table(res: dict[str, dict[str, Any]], dq: dict[str, Any]) -> str:
    """The results as a table, each system against raw Dramatiq's `dq`."""
    rows = [row(name, r, dq) for name, r in res.items()]
    return _report.table(
        "end to end (CPU in ms per task, summed over processes; x = ratio to raw Dramatiq)",
        ["system", "tasks/s", "x tput", "CPU ms", "x CPU", "client", "server", "workers", "redis"],
        rows,
    )


def main() -> None:
    p = _e2e.parser(__doc__ or "")
    args = p.parse_args()
    n = args.tasks or (1_500 if args.quick else 20_000)
    print(
        f"end to end: {n} no-op tasks, {args.processes} worker processes x {args.threads} threads"
    )
    res = run(n, args.processes, args.threads)
    tc, dq, ce = res["taskcast"], res["dramatiq"], res["celery"]
    cpu_vs_dq = tc["cpu_ms_per_task"] / dq["cpu_ms_per_task"]
    cpu_vs_ce = tc["cpu_ms_per_task"] / ce["cpu_ms_per_task"]
    tput_vs_ce = tc["tasks_per_s"] / ce["tasks_per_s"]
    targets = {
        "cpu_per_task_vs_dramatiq": {
            "value": cpu_vs_dq,
            "target": "<= 1.6",
            "met": cpu_vs_dq <= 1.6,
        },
        "cpu_per_task_vs_celery": {"value": cpu_vs_ce, "target": "< 1.0", "met": cpu_vs_ce < 1.0},
        "throughput_vs_celery": {"value": tput_vs_ce, "target": ">= 1.5", "met": tput_vs_ce >= 1.5},
    }
    print()
    print(table(res, dq))
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "e2e",
        args.quick,
        {
            "tasks": n,
            "processes": args.processes,
            "threads": args.threads,
            "results": res,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
