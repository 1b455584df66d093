"""Slots: N slow async calls submitted at once to one default worker process, against one plain
asyncio process making the same N calls (issue 8).

Kinds: `ai.chat` against the local stand-in model server (30 tokens/s, 30 tokens: ~1 s per
completion), baseline `openai` streaming; `http.request` against a loopback server that answers
after 2 s (`bench._slow_http`), baseline `httpx`. The worker is `taskcast worker` with its
defaults (1 process, 8 threads, 1,000 slots). Targets: makespan <= 1.3x the baseline's, peak
RUNNING = N, worker RSS < 400 MiB at N = 1,000, worker CPU per call <= 2x the baseline's.

`--submit` says how the N tasks are submitted: `batch`, in SubmitTasks calls of up to 1,000 items
(what a caller with N calls in hand does: the targets are judged on it), or `single`, N concurrent
SubmitTask calls (the burst of separate callers); both by default, each against its own baseline.

    python -m bench.slots [--quick] [--kinds ai http] [--n 200 1000] [--submit batch single]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench import _procs, _report
from taskcast.cli.redis_proc import free_port

PY = _procs.PY
MESSAGES: Any = [{"role": "user", "content": "Write three sentences about queues."}]
KIND = {"ai": "ai.chat", "http": "http.request"}
QUEUE = {"ai": "ai", "http": "http"}
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
STATS_EVERY = 0.25  # s: GetStats costs the server a few Redis reads and the worker nothing
MAKESPAN_X, CPU_X, RSS_MIB = 1.3, 2.0, 400


class RssPeak:
    """Samples a process tree's RSS every 100 ms on a thread: the peak of its largest process
    and of the tree's sum, MiB (psutil reads /proc: ~50 us a process, nothing on the worker)."""

    def __init__(self, child: _procs.Child) -> None:
        self.child, self.top, self.tree = child, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        """Take one reading; returns the largest process's RSS now."""
        rss = []
        for p in self.child.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                rss.append(p.memory_info().rss / 2**20)
        self.top, self.tree = max(self.top, *rss, 0.0), max(self.tree, sum(rss))
        return max(rss, default=0.0)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def settle(max_load: float, wait: float) -> list[float]:
    """Wait up to `wait` s for the 1-minute load to fall under `max_load` (the machine is shared);
    return the load averages the measurement starts with."""
    deadline = time.monotonic() + wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(2)
    return [round(x, 2) for x in os.getloadavg()]


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    marks = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda m: m)
    best = now = 0
    for _, step in marks:
        now += step
        best = max(best, now)
    return best


def baseline(
    st: _procs.Stack, kind: str, url: str, n: int, upstream: _procs.Child
) -> dict[str, Any]:
    """One plain asyncio process (`bench._slots_baseline`) making the N calls."""
    meter = _procs.CpuMeter({"upstream": _procs.tree_of(upstream)})
    log = st.tmp / f"baseline-{kind}-{n}.log"
    child = st.spawn(f"baseline-{kind}-{n}", [PY, "-m", "bench._slots_baseline", kind, url, str(n)])
    meter.start()
    child.proc.wait(600)
    cpu = meter.stop()
    out = json.loads(log.read_text().strip().splitlines()[-1])
    out["cpu_ms_per_call"] = out["cpu_s"] / n * 1000
    out["upstream_cpu_s"] = cpu["upstream"]
    return out


async def _submit_all(
    tc: Any, kind: str, payload: dict[str, Any], n: int, submit: str = "single"
) -> list[str]:
    if submit == "single":
        handles = await asyncio.gather(*(tc.submit(KIND[kind], payload) for _ in range(n)))
    else:
        handles = await tc.submit_many({"kind": KIND[kind], "payload": payload} for _ in range(n))
    failed = [h for h in handles if isinstance(h, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} submits failed, first: {failed[0]!r}")
    return [h.id for h in handles]


def _done(stats: Any, kind: str) -> int:
    for k in stats.kinds:
        if k.kind == KIND[kind]:
            return sum(v for s, v in k.counts.items() if s.value in TERMINAL)
    return 0


async def through_taskcast(
    port: int,
    kind: str,
    payload: dict[str, Any],
    n: int,
    meter: _procs.CpuMeter,
    submit: str = "single",
) -> dict[str, Any]:
    """Submit N at once, sample GetStats until all are terminal, then read every task record."""
    from taskcast.client import AsyncTaskClient

    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        before, peak_sampled = _done(await tc.stats(), kind), 0
        meter.start()
        t0 = time.time()
        ids = await _submit_all(tc, kind, payload, n, submit)
        submitted = time.time() - t0
        deadline = time.monotonic() + 600
        while True:
            stats = await tc.stats()
            running = [q.running for q in stats.queues if q.name == QUEUE[kind]]
            peak_sampled = max(peak_sampled, *running, 0)
            if _done(stats, kind) - before >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(STATS_EVERY)
        cpu = meter.stop()
        sem = asyncio.Semaphore(64)

        async def get(task_id: str) -> Any:
            async with sem:
                return await tc.get(task_id)

        tasks = await asyncio.gather(*(get(i) for i in ids))
    return {"submit": submit} | _summarise(tasks, t0, submitted, peak_sampled, cpu, n)


def _summarise(
    tasks: list[Any], t0: float, submitted: float, peak_sampled: int, cpu: dict[str, float], n: int
) -> dict[str, Any]:
    ok = [t for t in tasks if t.state.value == "SUCCEEDED"]
    spans = [(t.started_at.timestamp(), t.finished_at.timestamp()) for t in ok]
    waits = [(t.started_at - t.created_at).total_seconds() for t in ok]
    wait = _report.summary_ms(waits)
    return {
        "n": n,
        "succeeded": len(ok),
        "states": {
            s: sum(t.state.value == s for t in tasks) for s in {t.state.value for t in tasks}
        },
        "retried": sum(t.attempt > 1 for t in tasks),
        "submit_s": submitted,
        "makespan_s": max((b for _, b in spans), default=float("nan")) - t0,
        "peak_running": peak_overlap(spans),
        "peak_running_sampled": peak_sampled,
        "queue_wait_ms": {k: round(v, 1) for k, v in wait.items()},
        "run_time_ms": {
            k: round(v, 1) for k, v in _report.summary_ms([b - a for a, b in spans]).items()
        },
        "cpu_s": cpu,
        "cpu_ms_per_call": cpu["worker"] / n * 1000,
    }


def run_kind(
    kind: str,
    ns: list[int],
    submits: list[str],
    max_load: float,
    wait: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One private stack per kind: upstream, Redis, server, one default worker; each N and
    submit mode in turn, each with its own baseline run just before it."""
    out: dict[str, Any] = {s: {} for s in submits}
    with _procs.stack() as st:
        port = free_port()
        if kind == "ai":
            cmd = ["-m", "taskcast.cli.llm_standin", "--rate", "30", "--tokens", "30"]
            url = f"http://127.0.0.1:{port}/v1"
            env = {"TASKCAST_AI_BASE_URL": url, "TASKCAST_AI_API_KEY": "bench"}
            payload: dict[str, Any] = {"messages": MESSAGES, "model": "standin"}
        else:
            cmd = ["-m", "bench._slow_http", "--delay", "2"]
            url = f"http://127.0.0.1:{port}/slow"
            env = {"TASKCAST_HTTP_ALLOW": "127.0.0.1"}
            payload = {"url": url}
        upstream = st.spawn("upstream", [PY, *cmd, "--port", str(port)])
        st._await(upstream, lambda: _procs.port_open(port), "upstream server")
        r = st.redis()
        worker = st.workers(r.url, 1, 8, **env)  # `taskcast worker`'s defaults: -p 1 -t 8
        server, tc_port = st.server(r.url)
        asyncio.run(
            through_taskcast(tc_port, kind, payload, 5, _meter(worker, server, r, upstream))
        )
        for n in ns:
            for submit in submits:
                load = settle(max_load, wait)
                base = baseline(st, kind, url, n, upstream)
                idle = idle_cpu(worker)
                load_tc = settle(max_load, wait)
                meter = _meter(worker, server, r, upstream)
                spy = _spy(worker, profile, f"{kind}-{submit}-{n}")
                with RssPeak(worker) as rss:
                    idle_mib = rss.sample()
                    tc = asyncio.run(through_taskcast(tc_port, kind, payload, n, meter, submit))
                if spy is not None and profile is not None:
                    _unspy(spy, profile / f"{kind}-{submit}-{n}.txt")
                window = tc["makespan_s"] + STATS_EVERY  # about the metered window
                tc["worker_idle_cpu_ms_per_call"] = idle * window / n * 1000
                tc["worker_rss_mib"] = {
                    "idle": round(idle_mib, 1),
                    "peak_process": round(rss.top, 1),
                    "peak_tree": round(rss.tree, 1),
                }
                out[submit][str(n)] = {
                    "baseline": base,
                    "taskcast": tc,
                    "load": {"baseline": load, "taskcast": load_tc, "after": settle(99, 0)},
                }
                _print(kind, n, out[submit][str(n)])
    return out


def idle_cpu(worker: _procs.Child, seconds: float = 3.0) -> float:
    """The idle worker's CPU, in seconds per second (its queue polls and housekeeping)."""
    meter = _procs.CpuMeter({"worker": _procs.tree_of(worker)})
    meter.start()
    time.sleep(seconds)
    return meter.stop()["worker"] / seconds


def _spy(worker: _procs.Child, profile: Path | None, name: str) -> Any:
    """With --profile: py-spy (Python work only) on the worker tree during the measurement."""
    if profile is None:
        return None
    from bench import profile as spy

    profile.mkdir(parents=True, exist_ok=True)
    proc = spy.record(worker.proc.pid, profile / f"{name}.txt", subprocesses=True)
    time.sleep(1.0)  # py-spy attaches
    return proc


def _unspy(proc: Any, out: Path) -> None:
    from bench import profile as spy

    spy.finish(proc)
    spy.show(f"worker, {out.stem}", spy.summarise(out))


def _meter(worker: Any, server: Any, r: Any, upstream: Any) -> _procs.CpuMeter:
    return _procs.CpuMeter(
        {
            "worker": _procs.tree_of(worker),
            "server": _procs.tree_of(server),
            "redis": _procs.redis_tree(r),
            "upstream": _procs.tree_of(upstream),
        }
    )


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 8, with its value and whether it is met."""
    out = {}
    for n, run in res.items():
        base, tc = run["baseline"], run["taskcast"]
        ratio = tc["makespan_s"] / base["makespan_s"]
        cpu = tc["cpu_ms_per_call"] / base["cpu_ms_per_call"]
        out[f"makespan_ratio_{n}"] = {"value": ratio, "target": f"<= {MAKESPAN_X}"}
        out[f"makespan_ratio_{n}"]["met"] = ratio <= MAKESPAN_X
        out[f"peak_running_{n}"] = {"value": tc["peak_running"], "target": f"= {n}"}
        out[f"peak_running_{n}"]["met"] = tc["peak_running"] == int(n)
        out[f"cpu_ratio_{n}"] = {"value": cpu, "target": f"<= {CPU_X}", "met": cpu <= CPU_X}
        if int(n) >= 1000:
            mib = tc["worker_rss_mib"]["peak_process"]
            out[f"worker_rss_mib_{n}"] = {"value": mib, "target": f"< {RSS_MIB}"}
            out[f"worker_rss_mib_{n}"]["met"] = mib < RSS_MIB
    return out


def _print(kind: str, n: int, run: dict[str, Any]) -> None:
    base, tc = run["baseline"], run["taskcast"]
    rows = [
        ["baseline", base["makespan_s"], "-", "-", "-", base["peak_rss_kib"] / 1024,
         base["cpu_ms_per_call"], base["failed"]],
        ["taskcast", tc["makespan_s"], tc["peak_running"], tc["queue_wait_ms"]["p50_ms"],
         tc["queue_wait_ms"]["p99_ms"], tc["worker_rss_mib"]["peak_process"],
         tc["cpu_ms_per_call"], n - tc["succeeded"]],
    ]  # fmt: skip
    header = ["path", "makespan s", "peak RUNNING", "wait p50 ms", "wait p99 ms", "RSS MiB",
              "CPU ms/call", "failed"]  # fmt: skip
    title = f"{KIND[kind]}, N = {n}, {tc['submit']} submit (load {run['load']})"
    print(_report.table(title, header, rows), flush=True)


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--kinds", nargs="*", choices=sorted(KIND), default=["ai", "http"])
    p.add_argument("--n", type=int, nargs="*", help="tasks at once (default 200 1000; quick 100)")
    p.add_argument(
        "--submit",
        nargs="*",
        choices=["batch", "single"],
        default=["batch", "single"],
        help="SubmitTasks calls (batch, judged) or N SubmitTask calls (single)",
    )
    p.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load under this")
    p.add_argument("--settle", type=float, help="longest wait for that (s; 60, quick 0)")
    p.add_argument(
        "--profile", type=Path, help="py-spy the worker into DIR (distorts the figures: not kept)"
    )
    args = p.parse_args()
    ns = args.n or ([100] if args.quick else [200, 1000])
    settle_s = args.settle if args.settle is not None else (0 if args.quick else 60)
    runs = {
        kind: run_kind(kind, ns, args.submit, args.max_load, settle_s, args.profile)
        for kind in args.kinds
    }
    if args.profile is not None:
        return  # py-spy's sampling costs the worker CPU: these figures are not results
    verdicts = {
        kind: {submit: targets(res) for submit, res in by_submit.items()}
        for kind, by_submit in runs.items()
    }
    for kind, by_submit in verdicts.items():
        for submit, ts in by_submit.items():
            for name, t in ts.items():
                met = _report.verdict(t["met"])
                print(f"{KIND[kind]} {submit} {name}: {t['value']:.2f} ({t['target']}) {met}")
    _report.write("slots", args.quick, {"runs": runs, "targets": verdicts})


if __name__ == "__main__":
    main()
