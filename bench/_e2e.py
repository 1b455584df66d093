"""End-to-end runs shared by e2e, scaling and profile: N no-op tasks, submit to done.

Each run starts its own Redis and processes, warms up (which also proves the workers are up),
then submits `n` tasks as fast as the producer goes while the workers drain them, and stops the
clock when the last one is done. CPU seconds are summed over every process involved.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import dramatiq
import redis
from celery import Celery
from dramatiq.brokers.redis import RedisBroker

from bench import _procs, _report
from taskcast.client import AsyncTaskClient, RpcError, TaskSpec
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.mqlayout import MQLayout

WARMUP = 300
CALLERS = 16
TIMEOUT = 300.0


def _drain(check: Callable[[], bool], n: int, started: float) -> float:
    """Wait until `check()`, bounded by time; returns the seconds since `started`."""
    deadline = time.monotonic() + TIMEOUT + n / 100
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("tasks did not finish in time")
        time.sleep(0.005)  # polling a counter in Redis: the cheapest completion signal there is
    return time.perf_counter() - started


def parser(description: str, batch: bool = False) -> argparse.ArgumentParser:
    """The options of every end-to-end benchmark: worker layout, tasks per system (0: the
    benchmark's default) and, with `batch`, tasks per SubmitTasks call."""
    p = _report.parser(description)
    p.add_argument("--processes", "-p", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--tasks", "-n", type=int, default=0, help="tasks per system")
    if batch:
        p.add_argument("--batch", "-b", type=int, default=100, help="tasks per SubmitTasks call")
    return p


def result(
    system: str, n: int, elapsed: float, cpu: dict[str, float], **extra: Any
) -> dict[str, Any]:
    total = sum(cpu.values())
    return {
        "system": system,
        "tasks": n,
        "seconds": elapsed,
        "tasks_per_s": n / elapsed,
        "cpu_s": cpu,
        "cpu_s_total": total,
        "cpu_ms_per_task": total / n * 1000,
        "cpu_ms_per_task_by_process": {k: v / n * 1000 for k, v in cpu.items()},
        **extra,
    }


async def watch_batch(tc: AsyncTaskClient, label: dict[str, str]) -> None:
    """Wait for every task carrying `label` to end, on one group stream."""
    ((key, value),) = label.items()
    async with tc.watch_group(f"{key}={value}", end_when_done=True) as events:
        async for _ in events:
            pass


def taskcast(
    n: int,
    processes: int,
    threads: int,
    *,
    on_load: Callable[[dict[str, _procs.Child]], Callable[[], None]] | None = None,
    server_command: list[str] | None = None,
    worker_setup: str | None = None,
    env: dict[str, str] | None = None,
    server_env: dict[str, str] | None = None,
    batch: int = 0,
    kind: str = "bench.noop",
    wait: bool = False,
    options: Callable[[int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """taskcast: grpc.aio client (16 callers) -> server -> Redis -> taskcast workers.

    `server_command`, `worker_setup` and `env` run prototypes (bench.experiments) instead;
    `env` goes to the workers and the server, `server_env` to the server only.
    `batch` > 0: each caller submits `batch` tasks per SubmitTasks call instead of one per call.
    `kind` is the no-op kind submitted (bench.limits: one under limits).
    `wait`: each caller waits for its task (`wait`) or its batch (`watch_group` on a label the
    batch carries) before submitting the next, as a caller that wants the outcome does.
    `options(i)`: the submit options of the i-th task of a run, e.g. its priority (bench.fairness);
    none by default.
    """
    with _procs.stack() as st:
        r = st.redis()
        workers = st.workers(r.url, processes, threads, setup=worker_setup, **(env or {}))
        server, port = st.server(
            r.url, command=server_command, env={**(env or {}), **(server_env or {})}
        )
        client = redis.Redis.from_url(r.url)
        # BENCH_TENANT: the tenant of TASKCAST_TOKEN in TASKCAST_TENANTS_FILE (bench/README.md)
        tenant = os.environ.get("BENCH_TENANT", DEFAULT_TENANT)
        key = _procs.LAYOUT.of(tenant).kind_counts(kind)

        def done(target: int) -> Callable[[], bool]:
            return lambda: int(client.hget(key, "SUCCEEDED") or 0) >= target

        async def submit(count: int) -> None:
            async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
                left = iter(range(count))

                async def caller() -> None:
                    for i in left:
                        handle = await tc.submit(kind, "{}", **(options(i) if options else {}))
                        if wait:
                            await handle.wait()

                async def batch_caller() -> None:
                    while True:
                        label = {"batch": uuid.uuid4().hex} if wait else None
                        if not (ids := list(itertools.islice(left, batch))):
                            return
                        plain = TaskSpec(kind, "{}", labels=label)  # one spec for every item
                        chunk = [
                            TaskSpec(kind, "{}", labels=label, **options(i)) if options else plain
                            for i in ids
                        ]
                        results = await tc.submit_many(chunk)
                        assert not any(isinstance(r, RpcError) for r in results), results[:3]
                        if label:
                            await watch_batch(tc, label)

                one = batch_caller if batch else caller
                await asyncio.gather(*(one() for _ in range(CALLERS)))

        asyncio.run(submit(WARMUP))
        _drain(done(WARMUP), WARMUP, time.perf_counter())
        meter = _procs.CpuMeter(
            {
                "client": _procs.me,
                "server": _procs.tree_of(server),
                "workers": _procs.tree_of(workers),
                "redis": _procs.redis_tree(r),
            }
        )
        commands = _procs.CommandMeter(client)
        stop_hook = on_load({"server": server, "workers": workers}) if on_load else None
        commands.start()
        meter.start()
        t0 = time.perf_counter()
        asyncio.run(submit(n))
        submit_s = time.perf_counter() - t0
        elapsed = _drain(done(WARMUP + n), n, t0)
        cpu = meter.stop()
        redis_commands = commands.stop(n)
        if stop_hook is not None:
            stop_hook()
        client.close()
        return result(
            "taskcast",
            n,
            elapsed,
            cpu,
            submit_seconds=submit_s,
            processes=processes,
            threads=threads,
            batch=batch,
            wait=wait,
            redis_commands=redis_commands,
            # the calls alone, by name (bench.watched reads PUBLISHes per task from it)
            redis_calls_per_task={k: v["calls"] for k, v in redis_commands.items()},
        )


def redis_calls(client: redis.Redis, n: int) -> dict[str, float]:
    """Redis's commands per task since the last CONFIG RESETSTAT, by name (INFO commandstats:
    a script's own commands count under their names too, e.g. `publish`)."""
    stats = cast("dict[str, dict[str, float]]", client.info("commandstats"))
    calls = {k.removeprefix("cmdstat_"): v["calls"] / n for k, v in stats.items()}
    return dict(sorted(calls.items(), key=lambda kv: -kv[1]))


def raw_dramatiq(n: int, processes: int, threads: int) -> dict[str, Any]:
    """Stock Dramatiq: actor.send() from this process -> Redis -> `dramatiq` workers."""
    with _procs.stack() as st:
        r = st.redis()
        workers = st.dramatiq_workers(r.url, processes, threads)
        broker = RedisBroker(url=r.url)
        actor = dramatiq.Actor(
            lambda n: None,
            broker=broker,
            actor_name="bench_noop",
            queue_name="default",
            priority=0,
            options={},
        )
        client = redis.Redis.from_url(r.url)

        def done() -> bool:
            return int(client.hlen(MQLayout("dramatiq").msgs("default"))) == 0

        for i in range(WARMUP):
            actor.send(i)
        _drain(done, WARMUP, time.perf_counter())
        meter = _procs.CpuMeter(
            {
                "client": _procs.me,
                "workers": _procs.tree_of(workers),
                "redis": _procs.redis_tree(r),
            }
        )
        commands = _procs.CommandMeter(client)
        commands.start()
        meter.start()
        t0 = time.perf_counter()
        for i in range(n):
            actor.send(i)
        submit_s = time.perf_counter() - t0
        elapsed = _drain(done, n, t0)
        cpu = meter.stop()
        redis_commands = commands.stop(n)
        client.close()
        broker.close()
        return result(
            "dramatiq",
            n,
            elapsed,
            cpu,
            submit_seconds=submit_s,
            processes=processes,
            threads=threads,
            redis_commands=redis_commands,
        )


def celery(n: int, processes: int, threads: int) -> dict[str, Any]:
    """Celery on Redis (defaults, no result backend): send_task() -> Redis -> celery workers."""
    with _procs.stack() as st:
        r = st.redis()
        workers = st.celery_workers(r.url, processes, threads)
        app = Celery("bench", broker=r.url)
        app.conf.task_ignore_result = True
        client = redis.Redis.from_url(r.url)

        def done() -> bool:
            with client.pipeline(transaction=False) as p:
                p.llen("celery")
                p.hlen("unacked")
                queued, unacked = p.execute()
            return int(queued) == 0 and int(unacked) == 0

        def send(count: int) -> None:
            with app.producer_or_acquire() as producer:
                for i in range(count):
                    app.send_task("bench.noop", args=(i,), producer=producer)

        send(WARMUP)
        _drain(done, WARMUP, time.perf_counter())
        meter = _procs.CpuMeter(
            {
                "client": _procs.me,
                "workers": _procs.tree_of(*workers),
                "redis": _procs.redis_tree(r),
            }
        )
        meter.start()
        t0 = time.perf_counter()
        send(n)
        submit_s = time.perf_counter() - t0
        elapsed = _drain(done, n, t0)
        cpu = meter.stop()
        client.close()
        app.close()
        return result(
            "celery", n, elapsed, cpu, submit_seconds=submit_s, processes=processes, threads=threads
        )


SYSTEMS: dict[str, Callable[[int, int, int], dict[str, Any]]] = {
    "taskcast": taskcast,
    "dramatiq": raw_dramatiq,
    "celery": celery,
}
