"""Plots for docs/performance.md from the newest results: `python -m bench.plots [--quick]`.

Reads <name>-*.json, kept and raw (bench/_report.py; full runs unless --quick), and writes PNGs
to docs/img/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import _report

IMG = _report.ROOT / "docs" / "img"


def all_runs(name: str, quick: bool) -> list[dict[str, Any]]:
    """Every result file of a benchmark, oldest first, full or quick."""
    files = [p for p in _report.files(name) if p.stem.endswith("-quick") == quick]
    return [json.loads(p.read_text()) for p in files]


def newest(name: str, quick: bool) -> dict[str, Any] | None:
    """The newest result file of a benchmark, full or quick."""
    runs = all_runs(name, quick)
    return runs[-1] if runs else None


def _code(doc: dict[str, Any]) -> str:
    """The measured commit, starred when the tree had uncommitted changes."""
    code = doc.get("code")
    if not code:
        return "?"
    return str(code["head"]) + ("*" if code["uncommitted"] else "")


def e2e_history(docs: list[dict[str, Any]]) -> None:
    """taskcast's CPU per task by process, run after run (the code changed between them)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    labels = [f"{d['date'][11:16]}\n{_code(d)}" for d in docs]
    parts = ("client", "server", "workers", "redis")
    bottom = [0.0] * len(docs)
    for part in parts:
        vals = [d["results"]["taskcast"]["cpu_ms_per_task_by_process"].get(part, 0.0) for d in docs]
        ax.bar(labels, vals, bottom=bottom, label=f"taskcast {part}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    dq = [d["results"]["dramatiq"]["cpu_ms_per_task"] for d in docs]
    ax.plot(labels, dq, "k_", markersize=30, label="raw Dramatiq (same run)")
    ax.plot(labels, [1.6 * x for x in dq], "r_", markersize=30, label="target: 1.6x Dramatiq")
    ax.set_ylabel("CPU ms per no-op task")
    ax.set_xlabel("run (UTC time, commit; * = with uncommitted changes, ? = not recorded)")
    ax.set_title("End to end CPU per task, run by run")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(IMG / "e2e_history.png", dpi=110)
    plt.close(fig)
    print(f"wrote {(IMG / 'e2e_history.png').relative_to(IMG.parent.parent)}")


def cdf(ax: Any, values: list[float], label: str) -> None:
    xs = sorted(values)
    if xs:
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)


def _finish(fig: Any, ax: Any, title: str, path: Path, *, logx: bool = True) -> None:
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(IMG.parent.parent)}")


def submit(doc: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in doc["rows"]:
        if row["callers"] in (1, 16):
            cdf(ax, row["latencies_ms"], f"{row['target']}, {row['callers']} callers")
    ax.set_xlabel("SubmitTask latency, ms")
    ax.set_ylabel("fraction of calls")
    _finish(fig, ax, "SubmitTask vs bare grpc.aio echo: latency CDF", IMG / "submit_latency.png")


def handoff(doc: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in doc["runs"]:
        cdf(ax, [max(x, 0.01) for x in run["latencies_ms"]], run["system"])
    first = all_runs("handoff", False)[:1]
    if first and first[0]["date"] != doc["date"]:  # the oldest full run, for comparison
        old = first[0]["runs"][0]
        cdf(
            ax,
            [max(x, 0.01) for x in old["latencies_ms"]],
            f"{old['system']} ({first[0]['date'][:10]} {first[0]['date'][11:16]}, older code)",
        )
    ax.axvline(5, color="grey", linestyle=":", label="p50 target 5 ms")
    ax.set_xlabel("submit returned -> task started, ms (started before the reply: at 0.01)")
    ax.set_ylabel("fraction of tasks")
    _finish(fig, ax, "Hand-off latency on an idle system (CDF)", IMG / "handoff_latency.png")


def fanout(doc: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in doc["runs"]:
        cdf(
            ax,
            [max(x, 0.01) for x in run["latencies_ms"]],
            f"{run['system']}, {run['streams']} streams",
        )
    for exp in all_runs("experiments", False):  # prototypes (bench.experiments), if measured
        for run in exp.get("fanout", []):
            if not run["system"].startswith("stock"):
                label = f"prototype: {run['system']}"
                cdf(ax, [max(x, 0.01) for x in run["latencies_ms"]], label)
    ax.axvline(100, color="grey", linestyle=":", label="p99 target 100 ms")
    ax.set_xlabel("event written -> received by the watcher, ms")
    ax.set_ylabel("fraction of events")
    _finish(
        fig, ax, f"Watch fan-out at {doc['rate']:.0f} events/s (CDF)", IMG / "fanout_latency.png"
    )


def scaling(doc: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    procs = [p["processes"] for p in doc["points"]]
    for system in ("taskcast", "dramatiq"):
        ax.plot(
            procs,
            [p[system]["tasks_per_s"] for p in doc["points"]],
            marker="o",
            label=system if system == "taskcast" else "raw Dramatiq",
        )
    ax.set_xticks(procs)
    ax.set_xlabel(f"worker processes ({doc['threads']} threads each), same 2 cores")
    ax.set_ylabel("no-op tasks per second, end to end")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, "Throughput against worker processes", IMG / "scaling.png", logx=False)


def e2e(doc: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    systems = list(doc["results"])
    parts = ("client", "server", "workers", "redis")
    bottom = [0.0] * len(systems)
    for part in parts:
        vals = [doc["results"][s]["cpu_ms_per_task_by_process"].get(part, 0.0) for s in systems]
        ax.bar(systems, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("CPU ms per task (all processes)")
    ax.set_title("End to end: where the CPU goes per no-op task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "e2e_cpu.png", dpi=110)
    plt.close(fig)
    print(f"wrote {(IMG / 'e2e_cpu.png').relative_to(IMG.parent.parent)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="plot the newest quick results")
    args = p.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    for name, fn in (
        ("submit", submit),
        ("handoff", handoff),
        ("fanout", fanout),
        ("scaling", scaling),
        ("e2e", e2e),
    ):
        doc = newest(name, args.quick)
        if doc is None:
            print(f"no {'quick ' if args.quick else ''}results for {name} yet")
        else:
            fn(doc)
    history = all_runs("e2e", args.quick)
    if history:
        e2e_history(history)


if __name__ == "__main__":
    main()
