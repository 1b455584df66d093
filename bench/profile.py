"""Where the time goes: py-spy samples of the server (SubmitTask load) and of the server and
workers (end-to-end load), summarised by function and by library.

`python -m bench.profile [--quick]` prints the top functions by own time and the share of each
library per process, writes the JSON summary, and keeps the collapsed stacks (flame-graph input,
e.g. for speedscope or flamegraph.pl) in profiles/ beside the results (bench/_report.py).
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import _e2e, _procs, _report, submit

#: Collapsed stacks: with the raw results, or kept in bench/results/profiles with BENCH_KEEP=1.
PROFILES = (_report.KEPT if _report.keep() else _report.RESULTS) / "profiles"
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
#: Library buckets, by path fragment of the innermost frame; first match wins.
BUCKETS = (
    ("grpc", "grpc/"),
    ("protobuf", "google/protobuf"),
    ("redis-py", "redis/"),
    ("asyncio", "asyncio/"),
    ("dramatiq", "dramatiq/"),
    ("taskcast server", "/server/"),
    ("taskcast worker", "/worker/"),
    ("taskcast core", "/core/"),
    ("taskcast client", "/client/"),
    ("json", "json/"),
    ("logging", "logging/"),
    ("threading", "threading.py"),
    ("pydantic", "pydantic"),
)


def record(
    pid: int, out: Path, subprocesses: bool = False, native: bool = False
) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` (raw collapsed stacks, 250 Hz; `native` adds C/Cython frames)."""
    args = [
        str(_procs.BIN / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "250",
        "--full-filenames",
        "--output",
        str(out),
    ]
    if subprocesses:
        args.append("--subprocesses")
    # --gil: only samples holding the GIL, i.e. Python work, not threads waiting on a socket.
    args += ["--native"] if native else ["--nonblocking", "--gil"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(spy: subprocess.Popen[bytes]) -> None:
    """Stop py-spy; it writes its file on SIGINT."""
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()


def bucket(file: str) -> str:
    for name, fragment in BUCKETS:
        if fragment in file:
            return name
    return "python stdlib/other" if "/lib/python" in file else "other"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Own-time per function and per library, and inclusive time of taskcast's functions."""
    own: collections.Counter[str] = collections.Counter()
    libs: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        m = FRAME.match(frames[-1])
        fn, file = (m["fn"], m["file"]) if m else (frames[-1], "")
        own[f"{fn} ({Path(file).name})"] += count
        libs[bucket(file)] += count
        seen = set()
        for f in frames:
            m = FRAME.match(f)
            if m and any(s in m["file"] for s in ("/server/", "/worker/", "/core/", "/client/")):
                key = f"{m['fn']} ({Path(m['file']).name})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += count

    def share(c: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, n / total * 100) for name, n in c.most_common(k)] if total else []

    return {
        "samples": total,
        "own_top": share(own, top),
        "libraries": share(libs, 20),
        "taskcast_inclusive": share(inclusive, top),
    }


def compress(path: Path) -> str:
    """Gzip a collapsed-stack file in place; returns the new file name."""
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return gz.name


def show(title: str, s: dict[str, Any]) -> None:
    print(f"\n--- {title}: {s['samples']} samples (non-idle)")
    print(_report.table("by library (own time, %)", ["library", "%"], s["libraries"][:12]))
    print(_report.table("top functions (own time, %)", ["function", "%"], s["own_top"][:15]))
    print(
        _report.table(
            "taskcast functions (inclusive, %)", ["function", "%"], s["taskcast_inclusive"][:15]
        )
    )


def profile_submit(seconds: float, stamp: str, native: bool = False) -> dict[str, Any]:
    out = PROFILES / f"submit-server{'-native' if native else ''}-{stamp}.txt"
    with _procs.stack() as st:
        r = st.redis()
        server, port = st.server(r.url, accept_any_kind=True)
        stub_call = _stub(port)
        spy = record(server.proc.pid, out, native=native)
        time.sleep(1.0)  # py-spy attaches
        res = asyncio.run(stub_call(seconds))
        finish(spy)
    s = summarise(out)
    show(
        f"server{' (native)' if native else ''} under SubmitTask load (16 callers, "
        f"{res['rps']:,.0f}/s)",
        s,
    )
    return {"rps": res["rps"], "server": s, "collapsed": compress(out)}


def _stub(port: int) -> Callable[[float], Any]:
    import grpc

    from taskcast.v1 import tasks_pb2_grpc as pb_grpc

    async def go(seconds: float) -> dict[str, Any]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            return await submit.load(pb_grpc.TaskServiceStub(ch).SubmitTask, 16, seconds, 0.5)

    return go


def profile_e2e(n: int, stamp: str, batch: int = 0) -> dict[str, Any]:
    kind = f"e2e-batch{batch}" if batch else "e2e"
    outs = {
        "server": PROFILES / f"{kind}-server-{stamp}.txt",
        "workers": PROFILES / f"{kind}-workers-{stamp}.txt",
    }
    spies: list[subprocess.Popen[bytes]] = []

    def on_load(children: dict[str, _procs.Child]) -> Callable[[], None]:
        spies.append(record(children["server"].proc.pid, outs["server"]))
        spies.append(record(children["workers"].proc.pid, outs["workers"], subprocesses=True))
        time.sleep(1.0)  # py-spy attaches

        def stop() -> None:
            for spy in spies:
                finish(spy)

        return stop

    res = _e2e.taskcast(n, 2, 8, on_load=on_load, batch=batch)
    out: dict[str, Any] = {
        "tasks_per_s": res["tasks_per_s"],
        "cpu_ms_per_task": res["cpu_ms_per_task"],
    }
    for name, path in outs.items():
        out[name] = summarise(path)
        out[name]["collapsed"] = compress(path)
        show(f"{name} under end-to-end load ({res['tasks_per_s']:,.0f} tasks/s)", out[name])
    return out


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument(
        "--batch", type=int, default=0, help="only end to end, submitting N tasks per SubmitTasks"
    )
    args = p.parse_args()
    PROFILES.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.batch:
        n = 2_000 if args.quick else 15_000
        _report.write("profile", args.quick, {"e2e_batch": profile_e2e(n, stamp, args.batch)})
        return
    result = {
        "submit": profile_submit(4.0 if args.quick else 15.0, stamp),
        "submit_native": profile_submit(4.0 if args.quick else 15.0, stamp, native=True),
        "e2e": profile_e2e(2_000 if args.quick else 15_000, stamp),
    }
    _report.write("profile", args.quick, result)


if __name__ == "__main__":
    main()
