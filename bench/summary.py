"""Markdown tables of the newest full runs (two by default), for docs/performance.md.

`python -m bench.summary [--runs 2] [--quick]`
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench import _report
from bench import e2e as e2e_bench


def runs(
    name: str, count: int, quick: bool, since: str = "", until: str = "~"
) -> list[dict[str, Any]]:
    """The newest `count` results of a benchmark with a stamp in [since, until)."""
    files = sorted(
        p
        for p in _report.files(name)
        if p.stem.endswith("-quick") == quick and since <= p.stem[len(name) + 1 :] < until
    )
    return [json.loads(p.read_text()) for p in files[-count:]]


def md(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def submit(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        by = {(r["target"], r["callers"]): r for r in d["rows"]}
        for c in (1, 16, 64):
            e, t = by["echo", c], by["taskcast", c]
            rows.append(
                [
                    i,
                    c,
                    e["rps"],
                    t["rps"],
                    t["rps"] / e["rps"],
                    e["p50_ms"],
                    t["p50_ms"],
                    e["p99_ms"],
                    t["p99_ms"],
                    e["server_cpu_us_per_call"],
                    t["server_cpu_us_per_call"],
                    t["client_cpu_us_per_call"],
                ]
            )
    return md(
        [
            "run",
            "callers",
            "echo calls/s",
            "taskcast calls/s",
            "ratio",
            "echo p50 ms",
            "tc p50 ms",
            "echo p99 ms",
            "tc p99 ms",
            "echo server CPU us/call",
            "tc server CPU us/call",
            "client CPU us/call",
        ],
        rows,
    )


def e2e(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        dq = d["results"]["dramatiq"]
        for name, r in d["results"].items():
            rows.append([i, *e2e_bench.row(name, r, dq)])
    return md(
        [
            "run",
            "system",
            "tasks/s",
            "x Dramatiq",
            "CPU ms/task",
            "x Dramatiq CPU",
            "client",
            "server",
            "workers",
            "redis",
        ],
        rows,
    )


def handoff(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        for r in d["runs"]:
            s = r["summary"]
            rows.append(
                [
                    i,
                    r["system"],
                    s["n"],
                    s["p50_ms"],
                    s["p90_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                    r.get("cpu_s_per_s_of_run", {}).get("workers", float("nan")),
                ]
            )
    return md(
        [
            "run",
            "system",
            "tasks",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "idle worker CPU (cores)",
        ],
        rows,
    )


def fanout(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        for r in d["runs"]:
            s = r["summary"]
            rows.append(
                [
                    i,
                    r["system"],
                    r["streams"],
                    r["kib_per_stream_idle"],
                    r["kib_per_stream_busy"],
                    r["events_per_s"],
                    s["p50_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                    r["drops"],
                    r["open_retries"],
                    r.get("gaps", 0),
                    r.get("unfinished", 0) if r["system"] == "taskcast" else "-",
                    r["cpu_cores"].get("server", float("nan")),
                ]
            )
    return md(
        [
            "run",
            "system",
            "streams",
            "KiB/stream idle",
            "KiB/stream busy",
            "events/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "drops",
            "open retries",
            "gaps",
            "not ended",
            "server CPU (cores)",
        ],
        rows,
    )


def scaling(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        for p in d["points"]:
            tc, dq = p["taskcast"], p["dramatiq"]
            rows.append(
                [
                    i,
                    p["processes"],
                    tc["tasks_per_s"],
                    dq["tasks_per_s"],
                    tc["tasks_per_s"] / dq["tasks_per_s"],
                    tc["cpu_ms_per_task"],
                    dq["cpu_ms_per_task"],
                    tc["cpu_ms_per_task_by_process"]["server"],
                ]
            )
    return md(
        [
            "run",
            "worker processes",
            "taskcast tasks/s",
            "Dramatiq tasks/s",
            "ratio",
            "tc CPU ms/task",
            "dq CPU ms/task",
            "tc server CPU ms/task",
        ],
        rows,
    )


def llm(docs: list[dict[str, Any]]) -> str:
    rows = []
    for i, d in enumerate(docs, 1):
        if "skipped" in d:
            rows.append([i, "skipped: " + d["skipped"], "", "", "", ""])
            continue
        for name, r in d["runs"].items():
            rows.append(
                [
                    i,
                    name,
                    r["ttft"]["p50_ms"],
                    r["ttft"]["p99_ms"],
                    r["total"]["p50_ms"],
                    r["total"]["p99_ms"],
                ]
            )
    return md(["run", "path", "TTFT p50 ms", "TTFT p99 ms", "total p50 ms", "total p99 ms"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--since", default="", help="first stamp, e.g. 20261128-2124")
    p.add_argument("--until", default="~", help="stamps before this one")
    args = p.parse_args()
    for name, fn in (
        ("submit", submit),
        ("e2e", e2e),
        ("batch", e2e),  # the same results shape, more systems
        ("handoff", handoff),
        ("fanout", fanout),
        ("scaling", scaling),
        ("llm", llm),
    ):
        docs = runs(name, args.runs, args.quick, args.since, args.until)
        if docs:
            dates = ", ".join(
                f"{d['date']} code {d.get('code', {}).get('head', '?')}" for d in docs
            )
            print(f"\n### {name} ({dates})\n\n{fn(docs)}")
        else:
            print(f"\n### {name}: no results")


if __name__ == "__main__":
    main()
