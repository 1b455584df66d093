"""The gateway benchmark's browsers: many Server-Sent Event streams from one process.

Each stream is one HTTP/1.1 connection to `GET /v1/tasks/{id}/events`, as a browser's
EventSource makes; lines are split as the SSE spec says and each `data:` line parsed as JSON. A
progress event's latency is receipt time minus the stamp the writer put in its message. Streams
open gradually; one that fails is resumed with `Last-Event-ID` (counted as a drop once it had
delivered events). Ends when every stream has seen `event: end` or `bench:stop` is set; the
counts, the same as bench._fanout_watchers', go to --out as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp
import redis.asyncio as aredis

from bench._fanout_watchers import Stats, until_done


async def watch(http: aiohttp.ClientSession, url: str, stats: Stats, coord: aredis.Redis) -> None:
    """One stream until its end event (or cancellation)."""
    last, backoff, first = 0, 0.1, True
    while True:
        got_any = False
        try:
            async with http.get(url, headers={"Last-Event-ID": str(last)}) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status
                    )
                ended = False
                async for raw in response.content:
                    if raw.startswith(b"data: "):
                        if ended:
                            stats.ended += 1
                            return
                        if not got_any and first:
                            first = False
                            await coord.incr("bench:opened")
                        got_any = True
                        event = json.loads(raw[6:])
                        stats.events += 1
                        if event.get("type") == "progress":
                            stats.latencies_ms.append(
                                (time.time_ns() - int(event["message"])) / 1e6
                            )
                        seq = event.get("sequence", 0)
                        if seq:
                            if seq != last + 1:
                                stats.gaps += 1
                            last = seq
                    elif raw == b"event: end\n":
                        ended = True
                stats.ended += ended
                if ended:
                    return
                raise aiohttp.ClientPayloadError("stream closed without its end event")
        except (aiohttp.ClientError, OSError) as exc:
            backoff = await stats.failed(type(exc).__name__, got_any, backoff)


async def run(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    coord = aredis.Redis.from_url(args.redis)
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = []
        for task_id in ids:
            url = f"http://127.0.0.1:{args.port}/v1/tasks/{task_id}/events"
            tasks.append(asyncio.create_task(watch(http, url, stats, coord)))
            await asyncio.sleep(1 / args.open_rate)  # open gradually
        unfinished = await until_done(tasks, coord, args.timeout)
    await coord.aclose()
    return {"streams": len(ids), "unfinished": unfinished, **vars(stats)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--open-rate", type=float, default=500.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with open(args.ids) as f:
        ids = f.read().split()
    result = asyncio.run(run(args, ids))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
