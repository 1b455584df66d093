"""The cost of `TASKCAST_REDIS_WAIT_REPLICAS=1`: SubmitTask with and without WAIT for a replica.

A primary (AOF everysec) and one replica on this machine, two servers on the primary (one
waiting for the replica, one not), the same request from 1 and 16 callers to each in turn.
No worker runs: tasks stay queued. Over a network the cost grows by one round trip to the
replica (WAIT answers once the replica's ack reaches the primary).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from bench import _procs, _report
from bench.submit import load
from taskcast.cli.redis_proc import RedisProcess
from taskcast.v1 import tasks_pb2_grpc as pb_grpc

CALLERS = (1, 16)


async def measure(ports: dict[int, int], seconds: float, warmup: float) -> list[dict[str, Any]]:
    """Each caller count against each server, alternating."""
    rows = []
    for callers in CALLERS:
        for replicas, port in ports.items():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.TaskServiceStub(channel)
                result = await load(stub.SubmitTask, callers, seconds, warmup)
            result |= {"wait_replicas": replicas, "callers": callers}
            rows.append(result)
            print(
                f"  wait_replicas={replicas} callers={callers:3}  {result['rps']:8,.0f}/s  "
                f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                f"errors {result['errors']}"
            )
    return rows


def main() -> None:
    args = _report.parser(__doc__ or "").parse_args()
    seconds, warmup = (2.0, 0.5) if args.quick else (6.0, 1.0)
    with _procs.stack() as st:
        primary = RedisProcess(st.tmp / "primary").start()
        st.redis_procs.append(primary)
        follow = ("--replicaof", "127.0.0.1", str(primary.port))
        st.redis_procs.append(RedisProcess(st.tmp / "replica", extra_args=follow).start())
        _procs.wait_for(lambda: primary_has_replica(primary), 20, "the replica in sync", every=0.05)
        ports = {}
        for replicas in (0, 1):
            env = {"TASKCAST_REDIS_WAIT_REPLICAS": str(replicas)}
            _child, ports[replicas] = st.server(primary.url, accept_any_kind=True, env=env)
        rows = asyncio.run(measure(ports, seconds, warmup))
    by = {(r["wait_replicas"], r["callers"]): r for r in rows}
    table = [
        [
            c,
            by[0, c]["rps"],
            by[1, c]["rps"],
            by[1, c]["rps"] / by[0, c]["rps"],
            by[0, c]["p50_ms"],
            by[1, c]["p50_ms"],
            by[0, c]["p99_ms"],
            by[1, c]["p99_ms"],
        ]
        for c in CALLERS
    ]
    header = ["callers", "no wait /s", "wait 1 /s", "ratio", "p50 ms", "p50 wait", "p99 ms"]
    print()
    print(_report.table("SubmitTask without and with WAIT 1", [*header, "p99 wait"], table))
    _report.write("wait_replicas", args.quick, {"seconds_per_point": seconds, "rows": rows})


def primary_has_replica(primary: RedisProcess) -> bool:
    """Whether a replica is connected and online."""
    import redis

    with redis.Redis.from_url(primary.url, decode_responses=True) as client:
        info = client.info("replication")
        return int(info.get("connected_slaves", 0)) >= 1 and "online" in str(info.get("slave0"))


if __name__ == "__main__":
    main()
