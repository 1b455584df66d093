"""The bare grpc.aio baselines: a unary echo and a server-streaming fan-out, no Redis, no logic.

`python -m bench._echo --port P --reply-file F`:
- `/bench.Echo/Unary` takes any bytes and answers the bytes of F (a real SubmitTaskResponse), so
  the wire sizes match SubmitTask's.
- `/bench.Echo/Stream` holds a stream open; after `/bench.Echo/Start` (payload: events per second
  as ASCII), one generator sends TaskEvent-sized progress events round-robin over open streams at
  that aggregate rate, each stamped with `time.time_ns()` in `progress.message`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskcast.v1 import tasks_pb2 as pb


class Echo:
    """The handlers and the fan-out generator."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.inboxes: list[asyncio.Queue[bytes]] = []
        self.generator: asyncio.Task[None] | None = None

    async def unary(self, request: bytes, context: Any) -> bytes:
        return self.reply

    async def start(self, request: bytes, context: Any) -> bytes:
        if self.generator is None:
            self.generator = asyncio.create_task(self._generate(float(request.decode())))
        return b""

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        inbox: asyncio.Queue[bytes] = asyncio.Queue(1024)
        self.inboxes.append(inbox)
        hello = pb.TaskEvent(task_id="0" * 32, sequence=1)  # as taskcast replays RUNNING first
        hello.state_changed.state = pb.TASK_STATE_RUNNING
        yield hello.SerializeToString()
        try:
            while True:
                yield await inbox.get()
        finally:
            self.inboxes.remove(inbox)

    async def _generate(self, rate: float) -> None:
        tick, seq = 0.01, itertools.count(1)
        event = pb.TaskEvent(task_id="0" * 32)
        event.time.GetCurrentTime()
        cursor = 0
        next_at = time.monotonic()
        while True:
            next_at += tick
            for _ in range(max(1, round(rate * tick))):
                if not self.inboxes:
                    break
                cursor = (cursor + 1) % len(self.inboxes)
                event.sequence = next(seq)
                event.progress.fraction = 0.5
                event.progress.message = str(time.time_ns())
                inbox = self.inboxes[cursor]
                if not inbox.full():
                    inbox.put_nowait(event.SerializeToString())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def serve(port: int, reply: bytes) -> None:
    """Serve until killed."""
    echo = Echo(reply)
    server = grpc.aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
        "Start": grpc.unary_unary_rpc_method_handler(echo.start),
        "Stream": grpc.unary_stream_rpc_method_handler(echo.stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply-file", required=True)
    args = p.parse_args()
    with open(args.reply_file, "rb") as f:
        reply = f.read()
    asyncio.run(serve(args.port, reply))


if __name__ == "__main__":
    main()
