"""Redis CPU per task, the code before a change against the code now (issue 11's "0.15 ms").

Scripts (default): each pass starts a fresh redis-server and runs `bench._redis_cost` (a no-op
task's `submit`, `begin` and `finish`, 20,000 tasks, pipelined 100 at a time) under one
variant's code: `base`,
a commit extracted and run through PYTHONPATH (`--base`, default `git merge-base HEAD main`),
and `head`, the working tree as installed. Passes alternate, each round starting with the other
variant, so load from elsewhere hits both alike. Reports Redis CPU (its own getrusage)
and commands (INFO cpu and commandstats, a script's own commands counted under their names) per task
and per phase, the medians over the rounds, and the memory the finished tasks hold (before any
compaction). Nothing but Redis is measured: the fetch Dramatiq does and the round trips of real
processes are `bench.e2e`'s.

End to end (`--e2e`): `bench.e2e`'s taskcast run (16 single SubmitTask callers, 2 worker
processes x 8 threads, `-n` tasks) for `base` and `head`, both from extracted trees, and raw
Dramatiq, interleaved round by round (bench.limits `interleaved`), with Redis's CPU and commands
(INFO commandstats over the measured window) per task; the same with `--batch 100`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import _e2e, _procs, _report
from bench.limits import merge_base, tree

PHASES = ("submit", "begin", "finish")


def one(path: str | None, n: int, *extra: str) -> dict[str, Any]:
    """One pass on a fresh Redis; `path` is the PYTHONPATH of the code (None: as installed)."""
    with _procs.stack() as st:
        r = st.redis()
        assert r.proc is not None
        env = {"PYTHONPATH": path} if path else {}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench._redis_cost",
                "--port",
                str(r.port),
                "-n",
                str(n),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=_report.ROOT,
            env={**_procs.os.environ, **env},
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def commands(res: dict[str, Any]) -> float:
    """Commands per task over the phases, scripts' own commands included, EVALSHA excluded."""
    return sum(
        v["calls"] for ph in PHASES for k, v in res[ph]["commands"].items() if k != "evalsha"
    )


def e2e(n: int, rounds: int, batch: int, base: str, head: str) -> dict[str, Any]:
    """The end-to-end variants, interleaved; per run Redis CPU and commands per task."""
    variants: dict[str, Any] = {
        "base": lambda: _e2e.taskcast(n, 2, 8, env={"PYTHONPATH": base}, batch=batch),
        "head": lambda: _e2e.taskcast(n, 2, 8, env={"PYTHONPATH": head}, batch=batch),
        "dramatiq": lambda: _e2e.raw_dramatiq(n, 2, 8),
    }
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    names = list(variants)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            res = variants[name]()
            res["load"] = _procs.os.getloadavg()[0]
            runs[name].append(res)
            rc = res["redis_commands"]
            cmds = sum(v["calls"] for c, v in rc.items() if c not in ("evalsha", "eval"))
            print(
                f"  round {r + 1} {name:8} {res['tasks_per_s']:7,.0f} tasks/s  "
                f"{res['cpu_ms_per_task']:.3f} CPU-ms/task, Redis "
                f"{res['cpu_ms_per_task_by_process']['redis']:.3f}, {cmds:.1f} commands"
            )
    return runs


def e2e_table(runs: dict[str, list[dict[str, Any]]], title: str) -> dict[str, Any]:
    """Medians per variant, Redis CPU also as a ratio to raw Dramatiq's in the same rounds."""
    out, rows = {}, []
    for name, rs in runs.items():
        redis_ms = [r["cpu_ms_per_task_by_process"]["redis"] for r in rs]
        cmds = [
            sum(v["calls"] for c, v in r["redis_commands"].items() if c not in ("evalsha", "eval"))
            for r in rs
        ]
        out[name] = {
            "redis_ms": statistics.median(redis_ms),
            "cpu_ms": statistics.median(r["cpu_ms_per_task"] for r in rs),
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rs),
            "commands": statistics.median(cmds),
        }
    dq = out["dramatiq"]["redis_ms"]
    for name, o in out.items():
        rows.append(
            [name, o["tasks_per_s"], o["cpu_ms"], o["redis_ms"], o["redis_ms"] / dq, o["commands"]]
        )
    print(
        _report.table(
            title,
            ["system", "tasks/s", "CPU ms", "Redis ms", "x Dramatiq", "commands"],
            rows,
        )
    )
    return out


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-n", type=int, default=0, help="tasks per pass")
    p.add_argument("--base", default="", help="the commit to compare with (default: merge-base)")
    p.add_argument("--e2e", action="store_true", help="end to end instead (see above)")
    p.add_argument("--no-key", action="store_true", help="submit without idempotency keys")
    p.add_argument("--batch", type=int, default=0, help="with --e2e: tasks per SubmitTasks call")
    args = p.parse_args()
    base = args.base or merge_base()
    if args.e2e:
        main_e2e(args.n or (1_500 if args.quick else 4_000), args.rounds, args.batch, base, args)
        return
    n = args.n or (5_000 if args.quick else 20_000)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"base": tree(Path(tmp) / "base", base), "head": None}
        for i in range(args.rounds):
            for name in ("base", "head") if i % 2 == 0 else ("head", "base"):
                res = one(paths[name], n, *(["--no-key"] if args.no_key else []))
                runs[name].append(res)
                cpu = sum(res[ph]["cpu_us"] for ph in PHASES)
                print(f"  round {i + 1} {name}: {cpu:.1f} us/task, {commands(res):.1f} commands")
    rows, summary = [], {}
    for name, rs in runs.items():
        med = {ph: statistics.median(r[ph]["cpu_us"] for r in rs) for ph in PHASES}
        total = statistics.median(sum(r[ph]["cpu_us"] for ph in PHASES) for r in rs)
        cmds = statistics.median(commands(r) for r in rs)
        mem = statistics.median(r["memory"]["used_memory"] / n for r in rs)
        summary[name] = {"cpu_us": total, "by_phase": med, "commands": cmds, "bytes": mem}
        rows.append([name, total, *med.values(), cmds, mem])
    print()
    print(
        _report.table(
            f"Redis per task, {n} tasks a pass, medians of {args.rounds} rounds (base {base[:7]})",
            ["code", "CPU us", "submit", "begin", "finish", "commands", "bytes held"],
            rows,
        )
    )
    print(f"head / base CPU: {summary['head']['cpu_us'] / summary['base']['cpu_us']:.2f}")
    _report.write(
        "redis_cost",
        args.quick,
        {"tasks": n, "base": base, "summary": summary, "runs": runs},
    )


def main_e2e(n: int, rounds: int, batch: int, base: str, args: Any) -> None:
    """`--e2e`: base and head from extracted trees (HEAD's commit: commit first)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [tree(Path(tmp) / v, rev) for v, rev in (("base", base), ("head", "HEAD"))]
        runs = e2e(n, rounds, batch, *paths)
    how = f"SubmitTasks of {batch}" if batch else "single SubmitTask"
    summary = e2e_table(
        runs, f"end to end, {how}, {n} tasks, medians of {rounds} rounds (base {base[:7]})"
    )
    name = "redis_cost_e2e" + (f"_b{batch}" if batch else "")
    _report.write(name, args.quick, {"tasks": n, "base": base, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
