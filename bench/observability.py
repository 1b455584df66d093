"""What metrics and traces cost end to end: `bench.e2e`'s no-op tasks with each turned on.

Modes, run in rounds (off, metrics, traces, off, ...) so drift hits them alike:
- `off`: as shipped (no `--metrics-port`, no `OTEL_*`).
- `metrics`: `/metrics` on the server and on the worker, each scraped every second by this
  process, as Prometheus would.
- `traces`: `OTEL_TRACES_EXPORTER=otlp` to a silent OTLP/gRPC receiver on loopback
  (bench._otlp_sink), so every submit is a PRODUCER span and every attempt a CONSUMER span,
  batched and exported for real.
- `traces-10%`: the same with the SDK's standard ratio sampler at 10%
  (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`), as busy
  services usually run: the worker follows the sampling decision stored with the task.
Reported: each mode's tasks/s and CPU per task (client, server, workers and Redis summed) as a
ratio to `off` in the same round. Target (issue 9): each at most 10% more CPU per task.
"""

from __future__ import annotations

import statistics
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from bench import _e2e, _procs, _report
from taskcast.cli.redis_proc import free_port


def _scraper(urls: list[str]) -> Callable[[dict[str, _procs.Child]], Callable[[], None]]:
    def start(children: dict[str, _procs.Child]) -> Callable[[], None]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(1.0):
                for url in urls:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        reply.read()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def done() -> None:
            stop.set()
            thread.join()

        return done

    return start


def one(mode: str, n: int, processes: int, threads: int, sink_port: int) -> dict[str, Any]:
    """One e2e run of taskcast in `mode`."""
    if mode == "off":
        return _e2e.taskcast(n, processes, threads)
    if mode == "metrics":
        server_port, worker_port = free_port(), free_port()
        return _e2e.taskcast(
            n,
            processes,
            threads,
            env={"TASKCAST_METRICS_PORT": str(worker_port)},
            server_env={"TASKCAST_METRICS_PORT": str(server_port)},
            on_load=_scraper([f"http://127.0.0.1:{p}/metrics" for p in (server_port, worker_port)]),
        )
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    if mode == "traces-10%":
        otel |= {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
    return _e2e.taskcast(n, processes, threads, env=otel)


MODES = ("off", "metrics", "traces", "traces-10%")


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--processes", "-p", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--tasks", "-n", type=int, default=0, help="tasks per run")
    p.add_argument("--rounds", "-r", type=int, default=0)
    args = p.parse_args()
    n = args.tasks or (1_000 if args.quick else 5_000)
    rounds = args.rounds or (1 if args.quick else 3)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with _procs.stack() as st:
        sink_port = st.otlp_sink()
        for r in range(rounds):
            for mode in MODES:
                res = one(mode, n, args.processes, args.threads, sink_port)
                runs[mode].append(res)
                print(
                    f"  round {r + 1} {mode:8} {res['tasks_per_s']:8,.0f} tasks/s  "
                    f"{res['cpu_ms_per_task']:.3f} CPU-ms/task  {res['cpu_ms_per_task_by_process']}"
                )
    ratios: dict[str, dict[str, float]] = {}
    rows = []
    for mode in MODES[1:]:
        cpu = [
            on["cpu_ms_per_task"] / off["cpu_ms_per_task"]
            for on, off in zip(runs[mode], runs["off"], strict=True)
        ]
        tput = [
            on["tasks_per_s"] / off["tasks_per_s"]
            for on, off in zip(runs[mode], runs["off"], strict=True)
        ]
        ratios[mode] = {"cpu": statistics.median(cpu), "throughput": statistics.median(tput)}
        rows.append([mode, ratios[mode]["cpu"], min(cpu), max(cpu), ratios[mode]["throughput"]])
    print()
    print(
        _report.table(
            "against `off` in the same round (median, min, max of the rounds)",
            ["mode", "x CPU/task", "min", "max", "x tasks/s"],
            rows,
        )
    )
    _report.write(
        "observability",
        args.quick,
        {"tasks": n, "rounds": rounds, "runs": runs, "ratios": ratios},
    )


if __name__ == "__main__":
    main()
