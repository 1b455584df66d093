"""Watch fan-out: N concurrent WatchTask streams on one server process, each on its own running
task, while the tasks emit progress at an aggregate rate (default 2,000 events/s).

Measures the server's memory per stream, event latency from the writer's stamp to the client's
receipt, and streams dropped. Baseline in the same run: a bare grpc.aio server holding the same
number of streams and pushing the same aggregate event rate from an in-process generator
(bench._echo), i.e. gRPC's own floor. Targets: under 30 KiB per stream, p99 under 100 ms, no
stream dropped. The writer is a synthetic worker (bench._fanout_emitter, see there why).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import redis

from bench import _procs, _report
from taskcast.client import AsyncTaskClient
from taskcast.v1 import tasks_pb2 as pb


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "0 1")


def submit_all(port: int, n: int) -> list[str]:
    """Submit n tasks (32 callers); nothing consumes their messages."""

    async def go() -> list[str]:
        ids: list[str] = []
        async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
            left = iter(range(n))

            async def caller() -> None:
                for _ in left:
                    ids.append((await tc.submit("bench.noop", "{}")).id)

            await asyncio.gather(*(caller() for _ in range(32)))
        return ids

    return asyncio.run(go())


def start_watchers(
    st: _procs.Stack,
    port: int,
    redis_url: str,
    ids_file: Path,
    parts: int,
    open_rate: float,
    echo: bool,
) -> list[tuple[_procs.Child, Path]]:
    out = []
    for i in range(parts):
        result = st.tmp / f"watchers-{'echo' if echo else 'tc'}-{i}.json"
        args = [
            _procs.PY,
            "-m",
            "bench._fanout_watchers",
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--ids",
            str(ids_file),
            "--part",
            str(i),
            "--parts",
            str(parts),
            "--open-rate",
            str(open_rate / parts),
            "--out",
            str(result),
        ]
        child = st.spawn(f"watchers-{i}", [*args, "--echo"] if echo else args)
        out.append((child, result))
    return out


def collect(watchers: list[tuple[_procs.Child, Path]], timeout: float) -> dict[str, Any]:
    """Wait for the watcher processes and merge what they saw."""
    deadline = time.monotonic() + timeout
    for child, _ in watchers:
        child.proc.wait(max(1.0, deadline - time.monotonic()))
    merged: dict[str, Any] = {"latencies_ms": [], "errors": {}}
    for _, path in watchers:
        part = json.loads(path.read_text())
        merged["latencies_ms"] += part.pop("latencies_ms")
        for k, v in part.pop("errors").items():
            merged["errors"][k] = merged["errors"].get(k, 0) + v
        for k, v in part.items():
            merged[k] = merged.get(k, 0) + v
    return merged


def wait_opened(coord: redis.Redis, n: int, watchers: list[tuple[_procs.Child, Path]]) -> float:
    t0 = time.monotonic()

    def check() -> bool:
        for child, _ in watchers:
            if not child.alive() and child.proc.returncode:
                raise RuntimeError(f"watcher process failed with {child.proc.returncode}")
        return int(coord.get("bench:opened") or 0) >= n

    _procs.wait_for(check, 120 + n / 50, "all streams to open", every=0.1)
    return time.monotonic() - t0


def run_taskcast(
    n: int,
    rate: float,
    seconds: float,
    parts: int,
    open_rate: float,
    server_command: list[str] | None = None,
) -> dict[str, Any]:
    """taskcast's server; `server_command` runs a prototype (bench.experiments) instead."""
    with _procs.stack() as st:
        r = st.redis()
        server, port = st.server(r.url, accept_any_kind=True, command=server_command)
        coord = redis.Redis.from_url(r.url)
        ids = submit_all(port, n)
        ids_file = st.tmp / "ids.txt"
        ids_file.write_text("\n".join(ids))
        emitter = st.spawn(
            "emitter",
            [
                _procs.PY,
                "-m",
                "bench._fanout_emitter",
                "--redis",
                r.url,
                "--ids",
                str(ids_file),
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
            ],
        )
        _procs.wait_for(lambda: coord.exists("bench:begun"), 120, "tasks to start running")
        time.sleep(1.0)  # let the server settle after the submit burst before the memory reading
        rss_before = _procs.rss_kib(server)
        watchers = start_watchers(st, port, r.url, ids_file, parts, open_rate, echo=False)
        open_s = wait_opened(coord, n, watchers)
        time.sleep(1.0)
        rss_open = _procs.rss_kib(server)
        meter = _procs.CpuMeter(
            {
                "server": _procs.tree_of(server),
                "redis": _procs.redis_tree(r),
                "emitter": _procs.tree_of(emitter),
                "watchers": _procs.tree_of(*(c for c, _ in watchers)),
            }
        )
        meter.start()
        coord.set("bench:go", 1)
        time.sleep(seconds / 2)
        rss_busy = _procs.rss_kib(server)
        _procs.wait_for(
            lambda: coord.exists("bench:emitted"),
            seconds + 120 + n / 500,
            "the emitter to finish",
            every=0.1,
        )
        cpu = meter.stop()
        sent, emit_s = _text(coord.get("bench:emitted")).split()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c.alive() for c, _ in watchers):
            time.sleep(0.1)  # streams end on their terminal events
        coord.set("bench:stop", 1)
        seen = collect(watchers, 60)
        server_log = [
            line for line in st.log_tail("server", 10_000).splitlines() if line.startswith("gc ")
        ]
        return {
            "system": "taskcast",
            "server_gc_log": server_log,
            "streams": n,
            "open_seconds": open_s,
            "rss_kib": {"before": rss_before, "open": rss_open, "busy": rss_busy},
            "kib_per_stream_idle": (rss_open - rss_before) / n,
            "kib_per_stream_busy": (rss_busy - rss_before) / n,
            "events_sent": int(sent),
            "events_per_s": int(sent) / float(emit_s),
            "cpu_cores": {k: v / float(emit_s) for k, v in cpu.items()},
            **seen,
        }


def run_echo(n: int, rate: float, seconds: float, parts: int, open_rate: float) -> dict[str, Any]:
    with _procs.stack() as st:
        r = st.redis()  # coordination only
        coord = redis.Redis.from_url(r.url)
        echo, port = st.echo(pb.SubmitTaskResponse().SerializeToString())
        ids_file = st.tmp / "ids.txt"
        ids_file.write_text("\n".join(f"s{i}" for i in range(n)))
        time.sleep(1.0)
        rss_before = _procs.rss_kib(echo)
        watchers = start_watchers(st, port, r.url, ids_file, parts, open_rate, echo=True)
        open_s = wait_opened(coord, n, watchers)
        time.sleep(1.0)
        rss_open = _procs.rss_kib(echo)
        meter = _procs.CpuMeter(
            {"server": _procs.tree_of(echo), "watchers": _procs.tree_of(*(c for c, _ in watchers))}
        )
        meter.start()

        async def start() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                await ch.unary_unary("/bench.Echo/Start")(str(rate).encode(), timeout=10)

        asyncio.run(start())
        time.sleep(seconds / 2)
        rss_busy = _procs.rss_kib(echo)
        time.sleep(seconds / 2)
        cpu = meter.stop()
        coord.set("bench:stop", 1)
        seen = collect(watchers, 60)
        return {
            "system": "bare grpc.aio",
            "streams": n,
            "open_seconds": open_s,
            "rss_kib": {"before": rss_before, "open": rss_open, "busy": rss_busy},
            "kib_per_stream_idle": (rss_open - rss_before) / n,
            "kib_per_stream_busy": (rss_busy - rss_before) / n,
            "events_sent": len(seen["latencies_ms"]),
            "events_per_s": len(seen["latencies_ms"]) / seconds,
            "cpu_cores": {k: v / seconds for k, v in cpu.items()},
            **seen,
        }


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--streams", type=int, default=0)
    p.add_argument("--rate", type=float, default=2000.0, help="aggregate events per second")
    args = p.parse_args()
    n = args.streams or (500 if args.quick else 10_000)
    seconds = 5.0 if args.quick else 30.0
    parts = 1 if n <= 2_000 else 2
    open_rate = 500.0
    print(
        f"fan-out: {n} streams, {args.rate:.0f} events/s for {seconds:.0f} s, "
        f"{parts} watcher process(es), opening {open_rate:.0f}/s"
    )
    runs = [
        run_taskcast(n, args.rate, seconds, parts, open_rate),
        run_echo(n, args.rate, seconds, parts, open_rate),
    ]
    rows = []
    for run in runs:
        run["summary"] = _report.summary_ms([x / 1000 for x in run["latencies_ms"]])
        s = run["summary"]
        rows.append(
            [
                run["system"],
                run["streams"],
                run["kib_per_stream_idle"],
                run["kib_per_stream_busy"],
                run["events_per_s"],
                s["p50_ms"],
                s["p99_ms"],
                s["max_ms"],
                run["drops"],
                run["open_retries"],
                run.get("gaps", 0),
            ]
        )
        run["latencies_ms"] = _report.sample(run["latencies_ms"])
    tc = runs[0]
    targets = {
        "kib_per_stream": {
            "value": tc["kib_per_stream_busy"],
            "target": "< 30",
            "met": tc["kib_per_stream_busy"] < 30,
        },
        "p99_ms": {
            "value": tc["summary"]["p99_ms"],
            "target": "< 100",
            "met": tc["summary"]["p99_ms"] < 100,
        },
        "dropped": {
            "value": tc["drops"] + tc["unfinished"],
            "target": "0",
            "met": tc["drops"] + tc["unfinished"] == 0,
        },
    }
    print()
    print(
        _report.table(
            "fan-out (KiB = server RSS per stream; latency ms from writer stamp to client receipt)",
            [
                "system",
                "streams",
                "KiB idle",
                "KiB busy",
                "events/s",
                "p50",
                "p99",
                "max",
                "drops",
                "open retries",
                "gaps",
            ],
            rows,
        )
    )
    print(
        f"taskcast: {tc['unfinished']} streams did not end; errors {tc['errors']}; "
        f"CPU cores while emitting {tc['cpu_cores']}"
    )
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "fanout",
        args.quick,
        {"streams": n, "rate": args.rate, "seconds": seconds, "runs": runs, "targets": targets},
    )


if __name__ == "__main__":
    main()
