"""A bare grpc.aio TaskService for bench.latency: SubmitTask and WatchTask with no Redis and
no logic, so the real `AsyncTaskClient` runs its submit-then-watch loop against grpc alone.

`python -m bench._echo_tasks --port P [--work-us SUBMIT WATCH]`:
- SubmitTask answers a PENDING task with a fresh id, stamped now.
- WatchTask answers the three events a no-op task's watch carries (PENDING, RUNNING, SUCCEEDED
  with a null result), then ends.
- `--work-us`: microseconds of CPU each handler burns first, to stand in for taskcast's own work
  per call (validation, Redis round trips, conversion) at the same cost.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc


def burn(us: int) -> None:
    """Spend `us` microseconds of CPU on this thread (the loop's), as handler work would."""
    end = time.thread_time_ns() + us * 1000
    while time.thread_time_ns() < end:
        pass


class EchoTasks(pb_grpc.TaskServiceServicer):
    """SubmitTask and WatchTask with canned answers."""

    def __init__(self, submit_us: int, watch_us: int) -> None:
        self.submit_us, self.watch_us = submit_us, watch_us

    async def SubmitTask(self, request: pb.SubmitTaskRequest, context: Any) -> Any:
        burn(self.submit_us)
        task = pb.Task(
            id=uuid.uuid4().hex,
            kind=request.kind,
            queue="default",
            state=pb.TASK_STATE_PENDING,
            payload_json=request.payload_json,
            max_attempts=1,
            last_sequence=1,
            tenant="default",
        )
        task.create_time.GetCurrentTime()
        task.update_time.CopyFrom(task.create_time)
        return pb.SubmitTaskResponse(task=task, created=True)

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Any
    ) -> AsyncIterator[pb.TaskEvent]:
        burn(self.watch_us)
        states = (pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING, pb.TASK_STATE_SUCCEEDED)
        for seq, state in enumerate(states, 1):
            event = pb.TaskEvent(task_id=request.task_id, sequence=seq)
            event.time.GetCurrentTime()
            event.state_changed.state = state
            event.state_changed.attempt = 1
            if state == pb.TASK_STATE_SUCCEEDED:
                event.state_changed.result_json = "null"
            yield event


async def serve(port: int, submit_us: int, watch_us: int) -> None:
    """Serve until killed."""
    server = grpc.aio.server()
    pb_grpc.add_TaskServiceServicer_to_server(EchoTasks(submit_us, watch_us), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--work-us", type=int, nargs=2, default=[0, 0], metavar=("SUBMIT", "WATCH"))
    args = p.parse_args()
    try:  # as `taskcast server` runs
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, *args.work_us))
    else:
        uvloop.run(serve(args.port, *args.work_us))


if __name__ == "__main__":
    main()
