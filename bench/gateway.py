"""The HTTP gateway's cost: server CPU per delivered event, Server-Sent Events against WatchTask.

N watchers on ONE busy task (the fan-out a popular page makes), the task emitting progress at R
events/s for S seconds, so the server delivers N x R events/s. Each transport gets its own fresh
Redis and server, one after the other in the same run, with the same writer
(bench._fanout_emitter) and the same number of watchers: gRPC streams (bench._fanout_watchers,
250 per HTTP/2 connection, as the client library multiplexes) and SSE streams
(bench._gateway_watchers, one HTTP/1.1 connection each, as browsers open them). The figure is
the server process's CPU over the emitting window divided by the progress events the watchers
received in it. Target: SSE within 1.5x of gRPC's server CPU per event.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from bench import _procs, _report
from bench.fanout import collect, submit_all, wait_opened
from taskcast.cli.redis_proc import free_port


def run_one(transport: str, n: int, rate: float, seconds: float) -> dict[str, Any]:
    """One transport: a fresh stack, n watchers on one task, the writer at `rate` for `seconds`."""
    with _procs.stack() as st:
        r = st.redis()
        http_port = free_port()
        server, port = st.server(
            r.url, accept_any_kind=True, env={"TASKCAST_HTTP_PORT": str(http_port)}
        )
        coord = redis.Redis.from_url(r.url)
        (task_id,) = submit_all(port, 1)
        one = st.tmp / "one.txt"
        one.write_text(task_id)
        st.spawn(
            "emitter",
            [
                _procs.PY,
                "-m",
                "bench._fanout_emitter",
                "--redis",
                r.url,
                "--ids",
                str(one),
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
            ],
        )
        _procs.wait_for(lambda: coord.exists("bench:begun"), 60, "the task to start running")
        ids = st.tmp / "ids.txt"
        ids.write_text("\n".join([task_id] * n))  # every watcher on the same task
        out = st.tmp / f"watchers-{transport}.json"
        module, where = (
            ("bench._gateway_watchers", str(http_port))
            if transport == "sse"
            else ("bench._fanout_watchers", str(port))
        )
        watcher = st.spawn(
            f"watchers-{transport}",
            [
                _procs.PY,
                "-m",
                module,
                "--port",
                where,
                "--redis",
                r.url,
                "--ids",
                str(ids),
                "--open-rate",
                "500",
                "--out",
                str(out),
            ],
        )
        wait_opened(coord, n, [(watcher, out)])
        time.sleep(1.0)  # let the opening burst settle before the CPU window
        meter = _procs.CpuMeter(
            {"server": _procs.tree_of(server), "watchers": _procs.tree_of(watcher)}
        )
        meter.start()
        coord.set("bench:go", 1)
        _procs.wait_for(
            lambda: coord.exists("bench:emitted"), seconds + 120, "the writer", every=0.1
        )
        cpu = meter.stop()
        sent, emit_s = coord.get("bench:emitted").decode().split()  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and watcher.alive():
            time.sleep(0.1)  # streams end on their end events
        coord.set("bench:stop", 1)
        seen = collect([(watcher, out)], 60)
        delivered = len(seen["latencies_ms"])
        return {
            "transport": transport,
            "watchers": n,
            "events_written": int(sent),
            "write_rate": int(sent) / float(emit_s),
            "delivered": delivered,
            "deliveries_per_s": delivered / float(emit_s),
            "server_cpu_s": cpu["server"],
            "server_cpu_us_per_event": cpu["server"] / max(delivered, 1) * 1e6,
            "watchers_cpu_s": cpu["watchers"],
            "cpu_cores": {k: v / float(emit_s) for k, v in cpu.items()},
            **seen,
        }


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--watchers", type=int, default=0)
    p.add_argument("--rate", type=float, default=0, help="events/s the one task emits")
    p.add_argument("--rounds", type=int, default=0, help="gRPC, SSE pairs (alternating)")
    args = p.parse_args()
    n = args.watchers or (50 if args.quick else 100)
    # The writer emits at least one event per 10 ms tick: 100/s is its floor.
    rate = args.rate or 100.0
    seconds = 5.0 if args.quick else 20.0
    rounds = args.rounds or (1 if args.quick else 2)
    print(f"gateway: {n} watchers on one task, {rate:.0f} events/s for {seconds:.0f} s, x{rounds}")
    runs = [run_one(t, n, rate, seconds) for _ in range(rounds) for t in ("grpc", "sse")]
    rows = []
    for run in runs:
        run["summary"] = _report.summary_ms([x / 1000 for x in run["latencies_ms"]])
        s = run["summary"]
        rows.append(
            [
                run["transport"],
                run["watchers"],
                run["deliveries_per_s"],
                run["server_cpu_us_per_event"],
                run["cpu_cores"]["server"],
                run["cpu_cores"]["watchers"],
                s["p50_ms"],
                s["p99_ms"],
                run["drops"],
                run["gaps"],
                run["unfinished"],
            ]
        )
        run["latencies_ms"] = _report.sample(run["latencies_ms"])

    def per_event(transport: str) -> float:
        mine = [r for r in runs if r["transport"] == transport]
        cpu = sum(float(r["server_cpu_s"]) for r in mine)
        return cpu / max(sum(int(r["delivered"]) for r in mine), 1)

    ratio = per_event("sse") / per_event("grpc")
    targets: dict[str, dict[str, Any]] = {
        "sse_vs_grpc_cpu_per_event": {"value": ratio, "target": "<= 1.5", "met": ratio <= 1.5}
    }
    print()
    print(
        _report.table(
            "server CPU per delivered event (us), SSE gateway against WatchTask, same fan-out",
            [
                "transport",
                "watchers",
                "events/s",
                "us/event",
                "server cores",
                "client cores",
                "p50 ms",
                "p99 ms",
                "drops",
                "gaps",
                "unfinished",
            ],
            rows,
        )
    )
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "gateway",
        args.quick,
        {"watchers": n, "rate": rate, "seconds": seconds, "runs": runs, "targets": targets},
    )


if __name__ == "__main__":
    main()
