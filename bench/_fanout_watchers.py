"""The fan-out benchmark's clients: many WatchTask streams from one process, over many channels.

Streams open gradually (a burst of thousands gets CANCELLED by the server) and retry with
backoff; a stream that fails after it delivered events is a drop, counted, and resumed from its
last sequence. Each progress event's latency is receipt time minus the stamp the writer put in
its message. Ends when every stream has ended or `bench:stop` is set; writes JSON to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import grpc
import redis.asyncio as aredis

from taskcast.v1 import tasks_pb2 as pb

PER_CHANNEL = 250
TERMINAL = (pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)


class Stats:
    """What the streams of this process saw."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.open_retries = 0
        self.drops = 0
        self.gaps = 0
        self.ended = 0
        self.events = 0
        self.errors: dict[str, int] = {}

    async def failed(self, error: str, got_any: bool, backoff: float) -> float:
        """Count a stream that failed (a drop once it had delivered events), wait with jittered
        backoff, and return the next backoff."""
        self.errors[error] = self.errors.get(error, 0) + 1
        if got_any:
            self.drops += 1
            backoff = 0.1
        else:
            self.open_retries += 1
        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
        return min(backoff * 2, 2.0)


async def watch(method: Any, task_id: str, stats: Stats, coord: aredis.Redis, echo: bool) -> None:
    """One stream until its terminal event (or cancellation)."""
    last, opened, backoff = 0, False, 0.1
    request = b"" if echo else pb.WatchTaskRequest(task_id=task_id)
    while True:
        got_any = False
        try:
            if not echo:
                request = pb.WatchTaskRequest(task_id=task_id, after_sequence=last)
            async for event in method(request):
                if not got_any:
                    got_any = True
                    if not opened:
                        opened = True
                        await coord.incr("bench:opened")
                stats.events += 1
                if event.HasField("progress"):
                    stats.latencies_ms.append((time.time_ns() - int(event.progress.message)) / 1e6)
                if not echo and event.sequence:
                    if event.sequence != last + 1:
                        stats.gaps += 1
                    last = event.sequence
                if event.HasField("state_changed") and event.state_changed.state in TERMINAL:
                    stats.ended += 1
                    return
            stats.ended += 1
            return
        except grpc.aio.AioRpcError as exc:
            backoff = await stats.failed(exc.code().name, got_any, backoff)


async def until_done(tasks: list[asyncio.Task[None]], coord: aredis.Redis, timeout: float) -> int:
    """Wait for every stream to end, `bench:stop` or `timeout`; cancel the rest and return how
    many did not end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(t.done() for t in tasks):
        if await coord.exists("bench:stop"):
            break
        await asyncio.sleep(0.2)  # checking the driver's stop flag
    unfinished = sum(not t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return unfinished


async def run(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    coord = aredis.Redis.from_url(args.redis)
    stats = Stats()
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 60_000)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options)
        for _ in range(max(1, len(ids) // PER_CHANNEL + 1))
    ]
    path = "/bench.Echo/Stream" if args.echo else "/taskcast.v1.TaskService/WatchTask"
    serializer = None if args.echo else pb.WatchTaskRequest.SerializeToString
    methods = [
        ch.unary_stream(
            path, request_serializer=serializer, response_deserializer=pb.TaskEvent.FromString
        )
        for ch in channels
    ]
    tasks = []
    for i, task_id in enumerate(ids):
        tasks.append(
            asyncio.create_task(watch(methods[i % len(methods)], task_id, stats, coord, args.echo))
        )
        await asyncio.sleep(1 / args.open_rate)  # open gradually
    unfinished = await until_done(tasks, coord, args.timeout)
    for ch in channels:
        await ch.close()
    await coord.aclose()
    return {"streams": len(ids), "unfinished": unfinished, **vars(stats)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--open-rate", type=float, default=500.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--echo", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with open(args.ids) as f:
        ids = f.read().split()[args.part :: args.parts]
    result = asyncio.run(run(args, ids))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
