"""Measure the prototypes against the taskcast of the working tree, same run, same machine.

`python -m bench.experiments.run [--quick] [e2e] [fanout]`

- e2e: no-op tasks end to end (2 x 8), stock workers against workers that honour the log level
  (bench.experiments.quiet). Each variant runs twice, interleaved.
- fanout: 10,000 watch streams, the stock server (logging slow garbage collections) against the
  prototype server with a blocking Redis pool and frozen/tuned GC (bench.experiments.server).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import _e2e, _procs, _report

QUIET = "bench.experiments.quiet:setup"


def exp_e2e(n: int) -> list[dict[str, Any]]:
    rows = []
    for _round in range(2):
        for name, setup in (("stock", None), ("workers honour the log level", QUIET)):
            res = _e2e.taskcast(n, 2, 8, worker_setup=setup)
            res |= {"variant": name, "round": _round + 1}
            rows.append(res)
            print(
                f"  e2e {name:30} {res['tasks_per_s']:7,.0f} tasks/s  "
                f"{res['cpu_ms_per_task']:.3f} CPU-ms/task {res['cpu_ms_per_task_by_process']}",
                flush=True,
            )
    return rows


FANOUT_VARIANTS = {
    "stock (+ gc log)": [],
    "blocking pool 1000 + gc freeze": ["--pool", "1000", "--gc-freeze"],
    "pool + gc freeze + no wait_for": ["--pool", "1000", "--gc-freeze", "--no-wait-for"],
}


def exp_fanout(n: int, seconds: float, only: list[str]) -> list[dict[str, Any]]:
    from bench import fanout

    base = [_procs.PY, "-m", "bench.experiments.server", "--gc-log"]
    runs = []
    for label, command in FANOUT_VARIANTS.items():
        if only and label not in only:
            continue
        command = [*base, *command]
        parts = 1 if n <= 2_000 else 2
        run = fanout.run_taskcast(n, 2000.0, seconds, parts, 500.0, server_command=command)
        run["system"] = label
        run["summary"] = _report.summary_ms([x / 1000 for x in run["latencies_ms"]])
        run["latencies_ms"] = _report.sample(run["latencies_ms"])
        s = run["summary"]
        print(
            f"  fanout {label:40} p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} ms, "
            f"{run['kib_per_stream_busy']:.1f} KiB/stream, drops {run['drops']}, errors "
            f"{run['errors']}, slow GCs {len(run['server_gc_log'])}: "
            f"{run['server_gc_log'][:5]}",
            flush=True,
        )
        runs.append(run)
    return runs


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("names", nargs="*", metavar="NAME", help="e2e, fanout (default both)")
    p.add_argument(
        "--variant", action="append", default=[], help="fan-out variants to run (default all)"
    )
    p.add_argument("--deps", help=argparse.SUPPRESS)  # obsolete: hiredis, uvloop are deps now
    args = p.parse_args()
    names = args.names or ["e2e", "fanout"]
    out: dict[str, Any] = {}
    if "e2e" in names:
        out["e2e"] = exp_e2e(1_500 if args.quick else 15_000)
    if "fanout" in names:
        out["fanout"] = exp_fanout(
            500 if args.quick else 10_000, 5.0 if args.quick else 30.0, args.variant
        )
    _report.write("experiments", args.quick, out)


if __name__ == "__main__":
    main()
