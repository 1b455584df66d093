"""SubmitTask throughput and latency at 1, 16 and 64 callers, against a bare grpc.aio echo.

Both servers run as their own process; the client (this process, grpc.aio) sends the same
request bytes to both, and the echo answers with the bytes of a real SubmitTaskResponse. No worker
runs: tasks stay queued, which is what SubmitTask promises (it never waits for a worker).
Targets at 16 callers: at least 70% of the echo's throughput, p99 under 10 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench import _procs, _report
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

REQUEST = pb.SubmitTaskRequest(kind="bench.noop", payload_json='{"prompt": "' + "x" * 64 + '"}')
CALLERS = (1, 16, 64)
Call = Callable[[pb.SubmitTaskRequest], Awaitable[Any]]


async def load(call: Call, callers: int, seconds: float, warmup: float) -> dict[str, Any]:
    """`callers` loops calling back to back; latencies of the calls that start in the window."""
    latencies: list[float] = []
    errors = 0
    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds

    async def caller() -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < t_end:
            try:
                await call(REQUEST)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if t0 >= t_start:
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return {
        "calls": len(latencies),
        "errors": errors,
        "rps": len(latencies) / seconds,
        **_report.summary_ms(latencies),
        "latencies_ms": _report.sample([x * 1000 for x in latencies]),
    }


async def measure(
    taskcast_port: int,
    echo_port: int,
    server: _procs.Child,
    echo: _procs.Child,
    seconds: float,
    warmup: float,
) -> list[dict[str, Any]]:
    """Each caller count against the echo, then against taskcast (alternating, same channels)."""
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{taskcast_port}") as tc_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel,
    ):
        stub = pb_grpc.TaskServiceStub(tc_channel)
        echo_call = echo_channel.unary_unary(
            "/bench.Echo/Unary",
            request_serializer=pb.SubmitTaskRequest.SerializeToString,
            response_deserializer=pb.SubmitTaskResponse.FromString,
        )
        targets: dict[str, tuple[Call, _procs.Child]] = {
            "echo": (echo_call, echo),
            "taskcast": (stub.SubmitTask, server),
        }
        rows = []
        for callers in CALLERS:
            for name, (call, child) in targets.items():
                meter = _procs.CpuMeter({"server": _procs.tree_of(child), "client": _procs.me})
                meter.start()
                result = await load(call, callers, seconds, warmup)
                cpu = meter.stop()
                n = max(result["calls"], 1)
                result |= {
                    "target": name,
                    "callers": callers,
                    "server_cpu_us_per_call": cpu["server"] / n * 1e6,
                    "client_cpu_us_per_call": cpu["client"] / n * 1e6,
                }
                rows.append(result)
                print(
                    f"  {name:9} callers={callers:3}  {result['rps']:8,.0f}/s  "
                    f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
                )
        return rows


def reply_bytes(port: int) -> bytes:
    """One real SubmitTaskResponse, the echo's answer."""

    async def once() -> bytes:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await pb_grpc.TaskServiceStub(channel).SubmitTask(REQUEST, timeout=10)
            return bytes(resp.SerializeToString())

    return asyncio.run(once())


def main() -> None:
    args = _report.parser(__doc__ or "").parse_args()
    seconds, warmup = (2.0, 0.5) if args.quick else (8.0, 1.5)
    with _procs.stack() as st:
        r = st.redis()
        server, port = st.server(r.url, accept_any_kind=True)
        reply = reply_bytes(port)
        echo, echo_port = st.echo(reply)
        print(
            f"SubmitTask vs bare grpc.aio echo: {seconds:.0f} s per point "
            f"(request {REQUEST.ByteSize()} B, reply {len(reply)} B)"
        )
        rows = asyncio.run(measure(port, echo_port, server, echo, seconds, warmup))
    by = {(r["target"], r["callers"]): r for r in rows}
    table_rows = []
    for c in CALLERS:
        e, t = by["echo", c], by["taskcast", c]
        table_rows.append(
            [
                c,
                e["rps"],
                t["rps"],
                t["rps"] / e["rps"],
                e["p50_ms"],
                t["p50_ms"],
                e["p99_ms"],
                t["p99_ms"],
                e["server_cpu_us_per_call"],
                t["server_cpu_us_per_call"],
            ]
        )
    t16, e16 = by["taskcast", 16], by["echo", 16]
    ratio16 = t16["rps"] / e16["rps"]
    targets = {
        "throughput_ratio_at_16": {"value": ratio16, "target": ">= 0.70", "met": ratio16 >= 0.7},
        "p99_ms_at_16": {"value": t16["p99_ms"], "target": "< 10", "met": t16["p99_ms"] < 10},
    }
    print()
    print(
        _report.table(
            "SubmitTask vs echo (rps = calls/s; cpu = server CPU microseconds per call)",
            [
                "callers",
                "echo rps",
                "tc rps",
                "ratio",
                "echo p50",
                "tc p50",
                "echo p99",
                "tc p99",
                "echo cpu",
                "tc cpu",
            ],
            table_rows,
        )
    )
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "submit",
        args.quick,
        {
            "seconds_per_point": seconds,
            "request_bytes": REQUEST.ByteSize(),
            "reply_bytes": len(reply),
            "rows": rows,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
