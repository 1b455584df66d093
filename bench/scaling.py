"""Scaling: end-to-end throughput with 1, 2 and 4 worker processes (8 threads each).

Raw Dramatiq with the same layouts runs in the same pass, so the curve shows where taskcast's
own limit (server, Redis scripts, the two cores) sets in compared with the broker underneath.
"""

from __future__ import annotations

from typing import Any

from bench import _e2e, _report

PROCESSES = (1, 2, 4)


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--threads", "-t", type=int, default=8)
    args = p.parse_args()
    n = 1_000 if args.quick else 15_000
    print(f"scaling: {n} no-op tasks per point, {args.threads} threads per process")
    points: list[dict[str, Any]] = []
    for processes in PROCESSES:
        tc = _e2e.taskcast(n, processes, args.threads)
        dq = _e2e.raw_dramatiq(n, processes, args.threads)
        points.append({"processes": processes, "taskcast": tc, "dramatiq": dq})
        print(
            f"  {processes} processes: taskcast {tc['tasks_per_s']:,.0f}/s "
            f"({tc['cpu_ms_per_task']:.3f} CPU-ms/task), dramatiq {dq['tasks_per_s']:,.0f}/s"
        )
    rows = [
        [
            pt["processes"],
            pt["taskcast"]["tasks_per_s"],
            pt["dramatiq"]["tasks_per_s"],
            pt["taskcast"]["tasks_per_s"] / pt["dramatiq"]["tasks_per_s"],
            pt["taskcast"]["cpu_ms_per_task"],
            pt["dramatiq"]["cpu_ms_per_task"],
            pt["taskcast"]["cpu_ms_per_task_by_process"]["server"],
        ]
        for pt in points
    ]
    print()
    print(
        _report.table(
            "throughput vs worker processes",
            [
                "procs",
                "tc tasks/s",
                "dq tasks/s",
                "tc/dq",
                "tc CPU ms",
                "dq CPU ms",
                "tc server ms",
            ],
            rows,
        )
    )
    _report.write("scaling", args.quick, {"tasks": n, "threads": args.threads, "points": points})


if __name__ == "__main__":
    main()
