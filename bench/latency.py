"""Submit and wait, closed loop: where a task's time goes with 1, 4 and 16 callers.

Each of N callers submits a no-op task, then watches it to its end (what `wait()` does for a
success), then submits the next. Per task it records, on the client's wall clock and on Redis's
(the same machine's clock; Redis's in whole milliseconds, so a stage that starts or ends on it
reads up to 1 ms off): the submit call, the task's creation (Redis), its RUNNING and SUCCEEDED
events (Redis), the SUCCEEDED event in the caller's hands and the stream's end.
`python -m bench.latency [--callers 1 4 16] [--seconds S] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from bench import _e2e, _procs, _report, profile
from taskcast.cli.redis_proc import free_port
from taskcast.client import AsyncTaskClient

KIND = "bench.noop"
STAGES = (
    ("submit call", "t0", "t1"),
    ("submit -> created (Redis)", "t0", "created"),
    ("created -> RUNNING", "created", "running"),
    ("RUNNING -> SUCCEEDED", "running", "succeeded"),
    ("SUCCEEDED -> in caller's hands", "succeeded", "received"),
    ("received -> stream end", "received", "t2"),
    ("submit start -> stream end", "t0", "t2"),
)


async def one(tc: AsyncTaskClient) -> dict[str, float]:
    """Submit one no-op task, then watch it to its end; the times of each stage (seconds)."""
    out = {"t0": time.time()}
    handle = await tc.submit(KIND, "{}")
    out["t1"] = time.time()
    assert handle.task is not None and handle.task.created_at is not None
    out["created"] = handle.task.created_at.timestamp()
    async with tc.watch(handle.id) as events:
        async for e in events:
            name = e.state.name.lower() if e.state is not None else ""
            if e.time is not None and name in ("running", "succeeded"):
                out[name] = e.time.timestamp()
            if name == "succeeded":
                out["received"] = time.time()
    out["t2"] = time.time()
    return out


async def loop(
    ports: list[int], callers: int, seconds: float, channels: int
) -> list[dict[str, float]]:
    """`callers` closed loops for `seconds` over `channels` clients (channels), spread over
    the servers on `ports` (at least one client each)."""
    channels = max(min(channels, callers), len(ports))
    clients = [AsyncTaskClient(f"127.0.0.1:{ports[i % len(ports)]}") for i in range(channels)]
    rows: list[dict[str, float]] = []
    stop = time.monotonic() + seconds

    async def caller(tc: AsyncTaskClient) -> None:
        while time.monotonic() < stop:
            rows.append(await one(tc))

    try:
        await asyncio.gather(*(caller(clients[i % channels]) for i in range(callers)))
    finally:
        for tc in clients:
            await tc.close()
    return rows


Sched = tuple[int, int, int, int]  # ns running, ns queued, voluntary and forced switches


def _thread(pid: int, tid: int) -> Sched | None:
    """One thread's scheduler figures (/proc/<pid>/task/<tid>/schedstat and status)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            run, wait, _ = f.read().split()
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    vol = int(status["voluntary_ctxt_switches"])
    forced = int(status["nonvoluntary_ctxt_switches"])
    return int(run), int(wait), vol, forced


def _sched(procs: list[psutil.Process]) -> dict[int, Sched]:
    """Per thread of `procs`: its scheduler figures."""
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            for t in psutil.Process(p.pid).threads():
                if (figures := _thread(p.pid, t.id)) is not None:
                    out[t.id] = figures
    return out


class SchedMeter:
    """Time each process group spent running and runnable-but-waiting for a CPU (the run
    queue), from the kernel's schedstat, between `start()` and `stop()`; and the same for each
    group's busiest thread (a server's or client's event loop), with how often it went to sleep
    by itself (voluntary switches) and how often the kernel took its CPU away (forced)."""

    def __init__(self, groups: dict[str, Callable[[], list[Any]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, Sched]] = {}

    def start(self) -> None:
        """Take the first reading."""
        self._before = {g: _sched(f()) for g, f in self.groups.items()}

    def stop(self, seconds: float, tasks: int) -> dict[str, dict[str, float]]:
        """Per group: run and run-queue wait in ms per task, and the busiest thread's run and
        wait as shares of the wall time, its switches per second."""
        out = {}
        for g, f in self.groups.items():
            before = self._before[g]
            delta = [
                tuple(a - b for a, b in zip(now, before.get(tid, (0, 0, 0, 0)), strict=True))
                for tid, now in _sched(f()).items()
            ]
            top = max(delta, default=(0, 0, 0, 0))
            out[g] = {
                "run_ms_per_task": sum(d[0] for d in delta) / 1e6 / tasks,
                "wait_ms_per_task": sum(d[1] for d in delta) / 1e6 / tasks,
                "busiest_thread_run_share": top[0] / 1e9 / seconds,
                "busiest_thread_wait_share": top[1] / 1e9 / seconds,
                "busiest_thread_sleeps_per_s": top[2] / seconds,
                "busiest_thread_preempted_per_s": top[3] / seconds,
                "switches_per_task": sum(d[2] + d[3] for d in delta) / tasks,
            }
        return out


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, in ms."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def summary(rows: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """Tasks/s and each stage's p50/p90 in ms."""
    out: dict[str, Any] = {"tasks": len(rows), "tasks_per_s": len(rows) / seconds}
    for name, a, b in STAGES:
        vals = [r[b] - r[a] for r in rows if a in r and b in r]
        if vals:
            out[name] = {"p50": pct(vals, 0.5), "p90": pct(vals, 0.9), "n": len(vals)}
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every process, the kernel's too)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def measure(
    ports: list[int],
    groups: dict[str, Callable[[], list[Any]]],
    callers: int,
    seconds: float,
    channels: int = 1,
) -> dict[str, Any]:
    """One closed-loop run with CPU seconds per process group."""
    asyncio.run(loop(ports, callers, 1.0, channels))  # warm-up
    meter, sched = _procs.CpuMeter(groups), SchedMeter(groups)
    meter.start()
    sched.start()
    load = psutil.getloadavg()[0]
    busy0 = machine_busy()
    t0 = time.perf_counter()
    rows = asyncio.run(loop(ports, callers, seconds, channels))
    elapsed = time.perf_counter() - t0
    cpu = meter.stop()
    busy = (machine_busy() - busy0) / elapsed
    res_machine = {"busy_cores": busy, "others_cores": busy - sum(cpu.values()) / elapsed}
    res = summary(rows, elapsed)
    res["sched"] = sched.stop(elapsed, len(rows))
    res["load1"] = load
    res["machine"] = res_machine
    res["cpu_ms_per_task"] = {k: v / len(rows) * 1000 for k, v in cpu.items()}
    res["cores"] = {k: v / elapsed for k, v in cpu.items()}
    return res


def show(label: str, res: dict[str, Any]) -> None:
    """One run, printed."""
    cores = " ".join(f"{k} {v:.2f}" for k, v in res["cores"].items())
    m = res["machine"]
    cores += (
        f"; machine busy {m['busy_cores']:.2f} of {psutil.cpu_count()}, "
        f"others {m['others_cores']:.2f}"
    )
    print(
        f"{label}: {res['tasks_per_s']:.0f} tasks/s ({res['tasks']}); load {res['load1']:.1f}; "
        f"cores: {cores}"
    )
    for g, s in res["sched"].items():
        print(
            f"    {g:8} ms/task run {s['run_ms_per_task']:.2f} queued {s['wait_ms_per_task']:.2f};"
            f" {s['switches_per_task']:.0f} switches; busiest thread: runs "
            f"{s['busiest_thread_run_share']:.0%} of the time, queued "
            f"{s['busiest_thread_wait_share']:.0%}, "
            f"sleeps {s['busiest_thread_sleeps_per_s']:,.0f}/s, "
            f"preempted {s['busiest_thread_preempted_per_s']:,.0f}/s"
        )
    for name, _, _ in STAGES:
        if name in res:
            print(f"    {name:34} p50 {res[name]['p50']:7.2f} ms  p90 {res[name]['p90']:7.2f} ms")


def spy(label: str, pids: dict[str, int], on: bool) -> dict[str, tuple[Any, Path]]:
    """py-spy on each pid (GIL-holding samples only) when `on`, into bench.profile's folder."""
    if not on:
        return {}
    profile.PROFILES.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {}
    for name, pid in pids.items():
        path = profile.PROFILES / f"latency-{name}-{label.replace(' ', '-')}-{stamp}.txt"
        out[name] = (profile.record(pid, path), path)
    time.sleep(1.0)  # py-spy attaches
    return out


def echoes(specs: list[str]) -> list[tuple[str, tuple[int, int]]]:
    """`--echo` values as (system name, (submit us, watch us))."""
    out = []
    for spec in specs:
        a, b = (int(x) for x in spec.split(","))
        out.append((f"echo {a},{b} us", (a, b)))
    return out


def echo_server(st: _procs.Stack, name: str, work: tuple[int, int]) -> tuple[_procs.Child, int]:
    """bench._echo_tasks on a free port, burning `work` microseconds per call."""
    port = free_port()
    child = st.spawn(
        name.replace(" ", "-").replace(",", "-"),
        [
            *(_procs.PY, "-m", "bench._echo_tasks", "--port", str(port)),
            *("--work-us", str(work[0]), str(work[1])),
        ],
    )
    _procs.wait_for(lambda: _procs.port_open(port), 60, "echo server", every=0.05)
    return child, port


def renice(child: _procs.Child, value: int) -> None:
    """Set every thread of `child`'s processes to nice `value` (Linux: nice is per thread)."""
    for proc in child.tree():
        for t in proc.threads():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, t.id, value)


@dataclass
class System:
    """What one row of the comparison runs against."""

    ports: list[int]
    servers: list[_procs.Child]
    groups: dict[str, Callable[[], list[Any]]]
    niced: tuple[_procs.Child, int] | None = None  # workers run at this nice value meanwhile


def systems(st: _procs.Stack, args: argparse.Namespace) -> dict[str, System]:
    """The taskcast stack (with 1..N servers, workers niced) and the echo servers, by name."""
    r = st.redis()
    workers = st.workers(r.url, args.processes, args.threads)
    started = [st.server(r.url) for _ in range(max(args.servers))]
    out = {}
    for count in args.servers:
        servers = [child for child, _ in started[:count]]
        groups = {
            "client": _procs.me,
            "server": _procs.tree_of(*servers),
            "workers": _procs.tree_of(workers),
            "redis": _procs.redis_tree(r),
        }
        name = f"taskcast x{count}" if count > 1 else "taskcast"
        out[name] = System([port for _, port in started[:count]], servers, groups)
        for value in args.nice_workers:
            out[f"{name}, workers nice {value}"] = replace(out[name], niced=(workers, value))
    for name, work in echoes(args.echo):
        echo, port = echo_server(st, name, work)
        out[name] = System([port], [echo], {"client": _procs.me, "server": _procs.tree_of(echo)})
    return out


def point(label: str, system: System, callers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measured point, niced and profiled as asked; printed."""
    pids = {"server": system.servers[0].proc.pid, "client": os.getpid()}
    spies = spy(label, pids, args.spy and label.endswith(f"taskcast callers {callers}"))
    if system.niced is not None:
        renice(*system.niced)
    try:
        res = measure(system.ports, system.groups, callers, args.seconds, args.channels)
    finally:
        if system.niced is not None:
            renice(system.niced[0], 0)
    for what, (proc, path) in spies.items():
        profile.finish(proc)
        res[f"profile_{what}"] = summarised = profile.summarise(path)
        profile.show(f"{what}, {label}", summarised)
    show(label, res)
    return res


def parser() -> argparse.ArgumentParser:
    """`bench.latency`'s options."""
    p = _e2e.parser(__doc__ or "")
    p.add_argument("--callers", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--channels", type=int, default=1, help="clients the callers share")
    p.add_argument(
        "--echo",
        nargs="*",
        default=[],
        metavar="SUBMIT_US,WATCH_US",
        help="also run bench._echo_tasks servers burning this CPU per call (0,0: none)",
    )
    p.add_argument(
        "--servers",
        type=int,
        nargs="+",
        default=[1],
        help="taskcast runs with this many server processes (callers spread over them)",
    )
    p.add_argument(
        "--nice-workers",
        type=int,
        nargs="*",
        default=[],
        help="taskcast runs again with every worker thread at this nice value (0 after)",
    )
    p.add_argument("--spy", action="store_true", help="py-spy the server and client (profiles/)")
    return p


def main() -> None:
    args = parser().parse_args()
    res: dict[str, Any] = {}
    with _procs.stack() as st:
        compared = systems(st, args)
        for rnd in range(args.rounds):  # round by round: each round sees the same load
            for name, system in compared.items():
                for n in args.callers:
                    label = f"round {rnd + 1} {name} callers {n}"
                    res[label] = point(label, system, n, args)
    _report.write("latency", args.quick, {"args": vars(args), "results": res})


if __name__ == "__main__":
    main()
