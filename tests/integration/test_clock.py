"""One clock: a process whose wall clock is wrong neither reaps live attempts nor moves start times.

Every time stored or compared with a stored one is Redis's (`TIME` in the scripts). Before, each
process used its own: a reaper 20 s ahead saw every lease of a healthy worker 20 s older than it
was, and a server behind set delayed tasks' start times in the past.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import cast

import redis

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskState
from taskcast.core import mqlayout
from taskcast.core.layout import DEFAULT_TENANT
from tests.support import ServerProcess, WorkerProcess, new_task

SKEW_S = 20  # ten times the test lease (2 s, WorkerProcess's default)


def skewed(env: dict[str, str], where: Path, skew_s: int) -> Path:
    """Make the Python processes started with `env` see their wall clock `skew_s` off.

    A `sitecustomize` on PYTHONPATH shifts `time.time` and `time.time_ns` (what taskcast and
    Dramatiq read) and records each process it loaded in; returns that record's path.
    """
    (where / "sitecustomize.py").write_text(
        "import os, time\n"
        "_time, _time_ns = time.time, time.time_ns\n"
        f"time.time = lambda: _time() + {skew_s}\n"
        f"time.time_ns = lambda: _time_ns() + {skew_s} * 1_000_000_000\n"
        "with open(os.path.join(os.path.dirname(__file__), 'loaded'), 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(where), env.get("PYTHONPATH")) if p)
    return where / "loaded"


def redis_ms(redis_server: RedisProcess) -> int:
    """Redis's clock, in epoch milliseconds."""
    with redis.Redis.from_url(redis_server.url) as rdb:
        seconds, micros = rdb.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_reaper_with_a_clock_ahead_leaves_live_attempts_alone(
    client: TaskClient,
    worker: WorkerProcess,
    redis_server: RedisProcess,
    prefix: str,
    tmp_path: Path,
) -> None:
    # Beside the healthy module worker, one whose clock runs SKEW_S ahead and that consumes a
    # queue nobody submits to: all it does is housekeeping, reaping what looks expired to it.
    reaper = WorkerProcess(redis_server.url, prefix, threads=1)
    loaded = skewed(reaper.env, tmp_path, SKEW_S)
    reaper.args += ["--queues", "elsewhere"]
    reaper.start()
    try:
        assert loaded.read_text().split()  # the reaper's clock really is off
        # 6 s of work is three 2 s leases: each renewal must hold against the skewed reaper.
        handle = client.submit("demo.sleep", {"seconds": 6, "steps": 3}, max_attempts=3)
        states = [(e.state, e.attempt) for e in handle.watch() if e.type == "state"]
        assert states == [
            (TaskState.PENDING, 0),
            (TaskState.RUNNING, 1),
            (TaskState.SUCCEEDED, 1),
        ]
        assert handle.get().attempt == 1
    finally:
        reaper.stop(signal.SIGKILL)


def test_a_server_with_a_clock_behind_still_delays_by_redis_time(
    worker: WorkerProcess, redis_server: RedisProcess, prefix: str, tmp_path: Path
) -> None:
    server = ServerProcess(redis_server.url, prefix, free_port())
    loaded = skewed(server.env, tmp_path, -SKEW_S)
    server.start()
    try:
        assert loaded.read_text().split()
        with TaskClient(server.address) as client:
            before = redis_ms(redis_server)
            handle = client.submit("test.echo", {}, delay=1)
            handle.wait(timeout=20)
            task = handle.get().raw
        created = task.create_time.ToMilliseconds()
        assert created >= before  # stamped by Redis, not SKEW_S in the past
        assert task.not_before_time.ToMilliseconds() == created + 1000
        # The worker (clock right) held the message until then: not SKEW_S - 1 s too early.
        assert task.start_time.ToMilliseconds() >= created + 1000
    finally:
        server.stop(signal.SIGKILL)


async def test_a_delay_becomes_an_eta_by_redis_time(
    redis_server: RedisProcess, prefix: str
) -> None:
    """The message of a delayed task carries Redis's time + delay (resolved in the script)."""
    from dramatiq import Message

    from taskcast.core.layout import Layout
    from taskcast.server.store import ServerStore, connect

    layout = Layout(prefix)
    store = ServerStore(connect(redis_server.url), layout)
    new = new_task(delay_ms=30_000)
    try:
        record, _ = await store.submit("d" * 32, new)
        assert record.not_before == record.created + 30_000
        stored = await store.client.hvals(layout.mq.msgs(mqlayout.delayed("unserved")))
        etas = [Message.decode(cast(bytes, data)).options["eta"] for data in stored]
        assert etas == [record.not_before]
        await store.cancel("d" * 32, "test over", DEFAULT_TENANT)
    finally:
        await store.client.aclose()
