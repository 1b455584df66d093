"""Hand-off latency on an idle system: from the submit call returning to the task starting.

Tasks go one at a time with random pauses (the same seeded schedule for every system), so the
workers are idle each time. taskcast: from SubmitTask returning to this process receiving the
task's RUNNING event on the live channel (the worker's write plus one pub/sub hop, so slightly
pessimistic). Only watched tasks' events are published: right after the submit returns, this
process registers its interest as a watch does (the `watch` script); a RUNNING event stored
before that is read from the task's stream then, as a watch's replay would. Baselines, started
the same way: stock Dramatiq (`actor.send`) and Celery (`send_task`), each actor publishing its
own wall-clock start time. Targets for taskcast: p50 under 5 ms, p99 under 25 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
import redis.asyncio as aredis
from celery import Celery
from dramatiq.brokers.redis import RedisBroker

from bench import _procs, _report
from taskcast.core import calls, scripts

STARTED = "bench:started"
PAUSE = (0.3, 1.5)


def _ratio(a: float, b: float) -> float:
    """a / b; inf when b is 0 (a quick run's p50 can be, when the worker's stamp reads a
    millisecond clock that had not yet moved past the submit's return)."""
    return a / b if b > 0 else float("inf")


def pauses(n: int) -> list[float]:
    """The same pause schedule for every system."""
    rng = random.Random(5)
    return [rng.uniform(*PAUSE) for _ in range(n)]


def taskcast(
    n: int, poll_ms: int | None, *, worker_setup: str | None = None, label: str = ""
) -> dict[str, Any]:
    """SubmitTask return -> RUNNING event received, with the worker's poll interval `poll_ms`."""
    from taskcast.client import AsyncTaskClient

    env = {} if poll_ms is None else {"TASKCAST_POLL_INTERVAL_MS": str(poll_ms)}
    with _procs.stack() as st:
        r = st.redis()
        workers = st.workers(r.url, 1, 8, setup=worker_setup, **env)
        server, port = st.server(r.url)

        async def go() -> dict[str, Any]:
            sub_client = aredis.Redis.from_url(r.url)
            pubsub = sub_client.pubsub()
            await pubsub.subscribe(_procs.LAYOUT.live_channel())
            running: dict[str, float] = {}
            stamps: dict[str, int] = {}
            waiting: dict[str, asyncio.Future[None]] = {}

            async def listen() -> None:
                async for msg in pubsub.listen():
                    if msg["type"] != "message":
                        continue
                    # "<task id> <sequence> <[k, v, ...] as JSON>" (core/lua/_lib.lua)
                    raw_id, _, rest = msg["data"].partition(b" ")
                    task_id, flat = raw_id.decode(), json.loads(rest.partition(b" ")[2])
                    fields = dict(zip(flat[::2], flat[1::2], strict=True))
                    if fields.get("state") == "RUNNING":
                        running[task_id] = time.perf_counter()
                        stamps[task_id] = int(fields["ts"])
                        fut = waiting.pop(task_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(None)

            script = scripts.register(sub_client)["watch"]

            async def watch(task_id: str) -> None:
                """Interest registered; a RUNNING event already stored is received now."""
                call = calls.watch(_procs.LAYOUT, 60_000, [task_id], marks=True)
                (mark,) = calls.watch_reply(await script(keys=call.keys, args=call.args))
                if mark is not None and mark[1] >= 2 and task_id not in running:
                    key = _procs.LAYOUT.events(task_id)
                    stored: Any = await sub_client.xrange(key, "2-0", "2-0")
                    running[task_id] = time.perf_counter()
                    stamps[task_id] = int(stored[0][1][b"ts"])

            reader = asyncio.create_task(listen())
            lat, by_ts, submit_lat = [], [], []
            async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
                for _ in range(3):  # warm the channel, the server's kinds cache and the workers
                    await tc.submit("bench.noop", "{}")
                meter = _procs.CpuMeter(
                    {"workers": _procs.tree_of(workers), "server": _procs.tree_of(server)}
                )
                meter.start()
                t_begin = time.perf_counter()
                for pause in pauses(n):
                    await asyncio.sleep(pause)
                    t_call = time.perf_counter()
                    handle = await tc.submit("bench.noop", "{}")
                    t_ret, wall_ret = time.perf_counter(), time.time()
                    submit_lat.append(t_ret - t_call)
                    await watch(handle.id)
                    if handle.id not in running:
                        fut = waiting[handle.id] = asyncio.get_running_loop().create_future()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(fut, 5)
                    if handle.id in running:
                        lat.append(max(0.0, running[handle.id] - t_ret))
                        by_ts.append(max(0.0, stamps[handle.id] / 1000 - wall_ret))
                idle_cpu = meter.stop()
                wall = time.perf_counter() - t_begin
            reader.cancel()
            await pubsub.aclose()
            await sub_client.aclose()
            return {
                "latencies_ms": [x * 1000 for x in lat],
                "lost": n - len(lat),
                "by_event_timestamp": _report.summary_ms(by_ts),
                "submit_call": _report.summary_ms(submit_lat),
                "cpu_s_per_s_of_run": {k: v / wall for k, v in idle_cpu.items()},
            }

        res = asyncio.run(go())
    name = label or "taskcast" + (f" poll {poll_ms} ms" if poll_ms else "")
    return {"system": name, **res}


def _wait_marks(pubsub: Any, token: str, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            got, started = msg["data"].decode().split()
            if got == token:
                return float(started)
    return None


def _baseline(
    name: str,
    send: Callable[[str], None],
    url: str,
    n: int,
    workers: Callable[[], list[Any]],
) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(STARTED)
    for i in range(3):  # warm-up, and proof the workers are up
        send(f"w{i}")
        if _wait_marks(pubsub, f"w{i}", time.monotonic() + 60) is None:
            raise TimeoutError(f"{name} workers did not start")
    lat = []
    meter = _procs.CpuMeter({"workers": workers})
    meter.start()
    t_begin = time.perf_counter()
    for i, pause in enumerate(pauses(n)):
        time.sleep(pause)  # the idle gap being measured
        token = f"t{i}"
        send(token)
        t_ret = time.time()
        started = _wait_marks(pubsub, token, time.monotonic() + 5)
        if started is not None:
            lat.append(max(0.0, started - t_ret))
    idle_cpu = meter.stop()
    wall = time.perf_counter() - t_begin
    pubsub.close()
    client.close()
    return {
        "system": name,
        "latencies_ms": [x * 1000 for x in lat],
        "lost": n - len(lat),
        "cpu_s_per_s_of_run": {k: v / wall for k, v in idle_cpu.items()},
    }


def _ignore(value: object) -> None:
    """Drop a return value (to fit a `Callable[..., None]`)."""


def dramatiq_stock(n: int) -> dict[str, Any]:
    """Stock Dramatiq (default worker_timeout), 1 process x 8 threads."""
    with _procs.stack() as st:
        r = st.redis()
        workers = st.dramatiq_workers(r.url, 1, 8)
        broker = RedisBroker(url=r.url)
        actor = dramatiq.Actor(
            lambda token: None,
            broker=broker,
            actor_name="bench_mark",
            queue_name="default",
            priority=0,
            options={},
        )
        try:
            return _baseline(
                "dramatiq",
                lambda token: _ignore(actor.send(token)),
                r.url,
                n,
                _procs.tree_of(workers),
            )
        finally:
            broker.close()


def celery(n: int) -> dict[str, Any]:
    """Celery on Redis with its defaults, 1 process x 8 threads."""
    with _procs.stack() as st:
        r = st.redis()
        workers = st.celery_workers(r.url, 1, 8)
        app = Celery("bench", broker=r.url)
        app.conf.task_ignore_result = True
        try:
            return _baseline(
                "celery",
                lambda token: app.send_task("bench.mark", args=(token,)),
                r.url,
                n,
                _procs.tree_of(*workers),
            )
        finally:
            app.close()


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--poll-ms", type=int, nargs="*", default=[5], help="extra taskcast runs")
    args = p.parse_args()
    n = 8 if args.quick else 100
    print(f"hand-off: {n} tasks one at a time, pauses {PAUSE[0]}-{PAUSE[1]} s, 1 worker x 8")
    runs = [taskcast(n, None)]
    runs += [taskcast(n, ms) for ms in args.poll_ms]
    runs += [dramatiq_stock(n), celery(n)]
    rows = []
    for run in runs:
        run["summary"] = _report.summary_ms([x / 1000 for x in run["latencies_ms"]])
        s = run["summary"]
        idle = run.get("cpu_s_per_s_of_run", {})
        rows.append(
            [
                run["system"],
                s["n"],
                s["p50_ms"],
                s["p90_ms"],
                s["p99_ms"],
                s["max_ms"],
                run["lost"],
                idle.get("workers", float("nan")),
            ]
        )
    base = runs[0]["summary"]
    dq = next(r for r in runs if r["system"] == "dramatiq")["summary"]
    ce = next(r for r in runs if r["system"] == "celery")["summary"]
    targets = {
        "p50_ms": {"value": base["p50_ms"], "target": "< 5", "met": base["p50_ms"] < 5},
        "p99_ms": {"value": base["p99_ms"], "target": "< 25", "met": base["p99_ms"] < 25},
        "p50_vs_dramatiq": {
            "value": _ratio(base["p50_ms"], dq["p50_ms"]),
            "target": "< 1",
            "met": base["p50_ms"] < dq["p50_ms"],
        },
        "p50_vs_celery": {
            "value": _ratio(base["p50_ms"], ce["p50_ms"]),
            "target": "< 1",
            "met": base["p50_ms"] < ce["p50_ms"],
        },
    }
    print()
    print(
        _report.table(
            "hand-off latency, ms (worker CPU: cores the idle worker processes use)",
            ["system", "n", "p50", "p90", "p99", "max", "lost", "worker CPU"],
            rows,
        )
    )
    for k, v in targets.items():
        print(
            f"target {k} (default taskcast): {v['value']:.2f} ({v['target']}) "
            f"{_report.verdict(v['met'])}"
        )
    _report.write(
        "handoff", args.quick, {"tasks": n, "pauses_s": PAUSE, "runs": runs, "targets": targets}
    )


if __name__ == "__main__":
    main()
